"""Regime adaptation helpers: sqrt LR, train longer, the optimizer, weight
distance and the log-t fit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gapjax.ghost_bn import (Regime, adapt_regime, correlation, log_fit, lr_boundaries,
                             lr_schedule, make_optimizer, scale_lr, steps_per_epoch,
                             total_updates, train_longer, weight_distance)

SB = Regime(batch_size=16, epochs=30, lr={0: 0.1, 10: 0.01, 20: 0.001})


def test_scale_lr_every_entry():
    lb = scale_lr(SB, 448)
    k = math.sqrt(448 / 16)
    assert lb.batch_size == 448 and lb.epochs == 30
    assert [e for e, _ in lb.lr] == [0, 10, 20]
    np.testing.assert_allclose([v for _, v in lb.lr], [0.1 * k, 0.01 * k, 0.001 * k], rtol=1e-15)


def test_train_longer_matches_update_counts():
    """N = 1344 is divisible by 16 and 448: same number of updates and the drops
    at the same update index as the small-batch run."""
    n = 1344
    ra = adapt_regime(SB, 448, sqrt_lr=True, longer=True)
    assert ra.epochs == 30 * 28 and [e for e, _ in ra.lr] == [0, 280, 560]
    assert total_updates(ra, n) == total_updates(SB, n) == 30 * 84
    assert lr_boundaries(ra, n)[0] == lr_boundaries(SB, n)[0] == [840, 1680]
    np.testing.assert_allclose(lr_boundaries(ra, n)[1],
                               np.array(lr_boundaries(SB, n)[1]) * math.sqrt(28), rtol=1e-15)
    assert train_longer(SB, 448).lr[0][1] == 0.1  # LR untouched by train_longer
    plain = adapt_regime(SB, 448, sqrt_lr=False, longer=False)
    assert plain.batch_size == 448 and plain.lr == SB.lr and plain.epochs == SB.epochs
    # 1347 examples with drop-remainder batches: 84 and 3 per epoch.
    assert steps_per_epoch(1347, 16) == 84 and steps_per_epoch(1347, 448) == 3


def test_lr_schedule_piecewise():
    sched = lr_schedule(SB, 1344)  # 84 steps per epoch, drops at 840 and 1680
    got = [float(sched(s)) for s in (0, 839, 840, 1679, 1680, 10**6)]
    np.testing.assert_allclose(got, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
    assert float(jax.jit(sched)(jnp.int32(900))) == pytest.approx(0.01, rel=1e-6)


def test_optimizer_is_clip_then_weight_decay_then_torch_sgd(x64):
    """optax chain == PyTorch's clip_grad_norm(5) + SGD(momentum, weight_decay),
    written as an independent float64 NumPy loop, across an LR drop."""
    reg = Regime(batch_size=10, epochs=1, lr={0: 0.5, 0.3: 0.05}, weight_decay=1e-2)
    n = 100  # 10 steps per epoch, drop at step 3
    tx = make_optimizer(reg, n)
    rs = np.random.RandomState(0)
    w = {"a": rs.randn(3, 2), "b": rs.randn(4)}
    params = jax.tree.map(jnp.asarray, w)
    state = tx.init(params)
    buf = {k: np.zeros_like(v) for k, v in w.items()}
    for t in range(6):
        scale = 10.0 if t % 2 == 0 else 0.1  # alternate clipped / unclipped steps
        g = {k: scale * rs.randn(*v.shape) for k, v in w.items()}
        upd, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
        params = optax.apply_updates(params, upd)
        norm = math.sqrt(sum(float((v ** 2).sum()) for v in g.values()))
        c = min(1.0, 5.0 / norm)
        lr = 0.5 if t < 3 else 0.05
        for k in w:
            d = c * g[k] + 1e-2 * w[k]
            buf[k] = 0.9 * buf[k] + d
            w[k] = w[k] - lr * buf[k]
    for k in w:
        # the schedule holds float32 learning rates: 1e-6 relative.
        np.testing.assert_allclose(params[k], w[k], rtol=1e-6, atol=1e-7)


def test_weight_distance_per_layer():
    rs = np.random.RandomState(1)
    p0 = {"Dense_0": {"kernel": rs.randn(3, 4), "bias": rs.randn(4)},
          "BN_0": {"scale": rs.randn(4)}, "top": rs.randn(2)}
    p1 = jax.tree.map(lambda a: a + rs.randn(*a.shape), p0)
    d = jax.jit(weight_distance)(p1, p0)
    assert set(d) == {"Dense_0", "BN_0", "top"}
    ref = math.sqrt(((p1["Dense_0"]["kernel"] - p0["Dense_0"]["kernel"]) ** 2).sum()
                    + ((p1["Dense_0"]["bias"] - p0["Dense_0"]["bias"]) ** 2).sum())
    assert float(d["Dense_0"]) == pytest.approx(ref, rel=1e-6)  # float32
    assert float(d["top"]) == pytest.approx(np.linalg.norm(p1["top"] - p0["top"]), rel=1e-6)
    # vmap over a seed axis.
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), p1, p0)
    dv = jax.vmap(weight_distance, in_axes=(0, None))(stacked, p0)
    assert float(dv["BN_0"][1]) == 0.0 and float(dv["BN_0"][0]) > 0
    with pytest.raises(ValueError, match="structure"):
        weight_distance(p1, {"Dense_0": p0["Dense_0"]})


def test_log_fit_recovers_exact_law_and_rejects_bad_input():
    t = np.unique(np.logspace(0, 4, 30).astype(int))
    fit = log_fit(t, 0.3 + 2.5 * np.log(t))
    assert fit["a"] == pytest.approx(0.3, abs=1e-12) and fit["b"] == pytest.approx(2.5, rel=1e-12)
    assert fit["r"] == pytest.approx(1.0, abs=1e-12)
    # sqrt(t) (ordinary diffusion) is fit worse by log t than by sqrt t itself.
    d = np.sqrt(t)
    assert log_fit(t, d)["r"] < correlation(np.sqrt(t), d) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="> 0"):
        log_fit([0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="equal length"):
        log_fit([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 3"):
        log_fit([1, 2], [1, 2])


def test_regime_validation():
    with pytest.raises(ValueError, match="epoch 0"):
        Regime(batch_size=8, epochs=1, lr={1: 0.1})
    with pytest.raises(ValueError, match="increasing"):
        Regime(batch_size=8, epochs=1, lr=((0, 0.1), (2, 0.1), (1, 0.1)))
    with pytest.raises(ValueError, match="batch_size"):
        Regime(batch_size=0, epochs=1, lr={0: 0.1})
    with pytest.raises(ValueError, match="learning rate"):
        Regime(batch_size=8, epochs=1, lr={0: -0.1})
    with pytest.raises(ValueError, match="large_batch"):
        scale_lr(SB, 0)
    with pytest.raises(ValueError, match="batch_size"):
        steps_per_epoch(10, 11)
