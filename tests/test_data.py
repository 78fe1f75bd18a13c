"""Data: digits split, keyed batches, exact toy densities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gapjax import data


def test_digits_split_is_deterministic_stratified_and_disjoint():
    tr, te = data.load_digits(normalize=False)
    tr2, te2 = data.load_digits(normalize=False)
    np.testing.assert_array_equal(te.x, te2.x)
    assert len(tr.x) + len(te.x) == 1797 and tr.x.shape[1:] == (8, 8)
    counts = np.bincount(te.y, minlength=10) / np.bincount(np.concatenate([tr.y, te.y]))
    np.testing.assert_allclose(counts, 0.25, atol=0.01)  # rounding of ~180 per class
    rows = {r.tobytes() for r in tr.x.reshape(len(tr.x), -1)}
    # sklearn's digits contain a few exact duplicate images; no *index* is shared:
    assert sum(r.tobytes() in rows for r in te.x.reshape(len(te.x), -1)) < 10
    ntr, _ = data.load_digits(flat=True)
    np.testing.assert_allclose(ntr.x.mean(0), 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="test_fraction"):
        data.load_digits(test_fraction=1.5)


def test_batch_at_is_a_pure_function_covering_each_epoch():
    arrays = (jnp.arange(100), jnp.arange(100) * 2)
    key = jax.random.key(0)
    seen = np.concatenate([np.asarray(data.batch_at(key, s, arrays, 10)[0]) for s in range(10)])
    assert sorted(seen.tolist()) == list(range(100))  # one epoch = a permutation
    b = jax.jit(lambda s: data.batch_at(key, s, arrays, 10))(13)
    np.testing.assert_array_equal(b[1], 2 * b[0])
    np.testing.assert_array_equal(b[0], data.batch_at(key, 13, arrays, 10)[0])
    with pytest.raises(ValueError, match="batch_size"):
        data.batch_at(key, 0, arrays, 1000)


def test_mixture_log_prob_matches_scipy(x64):
    gm = data.gaussian_mixture([[0.0, 1.0], [2.0, -1.0]], [0.5, 1.5], [0.3, 0.7])
    x = np.random.RandomState(0).randn(20, 2)
    ref = np.log(0.3 * stats.multivariate_normal([0, 1], 0.25).pdf(x)
                 + 0.7 * stats.multivariate_normal([2, -1], 2.25).pdf(x))
    np.testing.assert_allclose(gm.log_prob(jnp.asarray(x)), ref, rtol=1e-5)
    with pytest.raises(ValueError, match="stds"):
        data.gaussian_mixture([[0.0, 0.0]], [-1.0])


def test_checkerboard_samples_lie_on_its_support_and_density_integrates():
    x = data.checkerboard(jax.random.key(0), 4000)
    lp = data.checkerboard_log_prob(x)
    assert np.all(np.isfinite(lp))
    # uniform on 8 unit squares: density 1/8 everywhere on the support
    np.testing.assert_allclose(np.exp(lp), 1 / 8, rtol=1e-6)
    assert data.sample_toy2d("moons", jax.random.key(1), 7).shape == (7, 2)
    with pytest.raises(ValueError, match="unknown toy"):
        data.sample_toy2d("circles", jax.random.key(1), 7)
