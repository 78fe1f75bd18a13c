"""DEUP: scale correction, leakage, seen-bit, vmapped folds, features, GP, input checks.

Configs are tiny and shared between tests so that jit caches are reused.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from gapjax import deup as D

F_MLP = D.MLPConfig(hidden=(16,), steps=150, lr=1e-2, activation="silu")
E_MLP = D.MLPConfig(hidden=(16,), steps=300, lr=1e-2)
PRED = D.Predictor(F_MLP)
FEATS = D.FeatureConfig(use_x=True, seen=True, density=True, distance=True)
CFG = D.DEUPConfig(predictor=PRED, error=D.ErrorConfig(E_MLP), features=FEATS, num_folds=4)


def _data(key, n=64):
    kx, ky = jax.random.split(key)
    x = jax.random.uniform(kx, (n, 1))
    y = jnp.sin(6.0 * x[:, 0]) + 0.1 * jax.random.normal(ky, (n,))
    return x, y


# --------------------------------------------------------------------------
# Scale correction: pure noise with f = mu must give u ~ 0 (not negative).
# --------------------------------------------------------------------------

def test_log_chi2_constant_matches_monte_carlo():
    rng = np.random.default_rng(0)
    z = rng.standard_normal(1_000_000)
    mc = np.mean(np.log(z * z))
    # sd(log chi2_1) = pi / sqrt(2) = 2.22 -> SE 0.0022; 0.01 is ~4.5 SE
    assert abs(mc - D.LOG_CHI2_1_MEAN) < 0.01
    assert abs(D.LOG_CHI2_1_MEAN - (-1.2704)) < 1e-3
    # closed form: psi(1/2) + log 2 = (-gamma - 2 log 2) + log 2 = -gamma - log 2
    assert abs(D.LOG_CHI2_1_MEAN - (-np.euler_gamma - math.log(2.0))) < 1e-12


def _noise_error_data(key, n, sigma):
    """Error rows of the exact predictor f = mu under pure Gaussian noise."""
    kx, kn = jax.random.split(key)
    x = jax.random.uniform(kx, (n, 1))
    loss = jnp.square(sigma * jax.random.normal(kn, (n,)))  # (f(x) - y)^2 with f = mu
    return D.ErrorData(phi=x, loss=loss, fold=jnp.zeros((n,), jnp.int32),
                       point=jnp.arange(n, dtype=jnp.int32),
                       trained_on=jnp.zeros((n, n), bool), valid=jnp.ones((n,), bool))


@pytest.mark.parametrize("target", ["log", "raw"])
def test_pure_noise_gives_zero_epistemic_uncertainty(getkey, target):
    sigma = 0.3
    ed = _noise_error_data(getkey(), 2000, sigma)
    cfg = D.ErrorConfig(E_MLP, target=target)
    ep = jax.jit(lambda k: D.fit_error_predictor(cfg, k, ed))(getkey())
    xq = jnp.linspace(0.05, 0.95, 50)[:, None]
    e = D.predict_error(cfg, ep, xq)
    u = D.epistemic_uncertainty(e, sigma**2)
    # 2000 log-chi2 samples: SE of the mean of log loss ~ 2.22/sqrt(2000) = 0.05,
    # i.e. ~5% on the raw scale; an MLP adds some x-dependence: 15% of sigma^2.
    assert abs(float(jnp.mean(e - sigma**2))) < 0.15 * sigma**2
    assert float(jnp.mean(u)) < 0.15 * sigma**2
    # (min(u) >= 0 held by construction; check the formula and the fit instead.)
    np.testing.assert_allclose(np.asarray(u), np.maximum(np.asarray(e) - sigma**2, 0.0),
                               rtol=1e-6, atol=1e-9)
    # Separate the MLP from the Monte-Carlo noise: e's grid average must match the
    # statistic of *these* losses that the target estimates after the scale map,
    # exp(mean log(loss) - E[log chi2_1]) (log) or mean(loss) (raw), in float64.
    # Pointwise e wiggles +-25% (an MLP fitted to pure noise), the grid average
    # tracks the statistic to <= 2% (measured); 5% tolerance.
    loss = np.asarray(ed.loss, np.float64)
    stat = (np.exp(np.mean(np.log(loss + cfg.floor)) - D.LOG_CHI2_1_MEAN)
            if target == "log" else loss.mean())
    assert abs(float(jnp.mean(e)) / stat - 1) < 0.05


def test_without_correction_log_target_underestimates_by_0_28(getkey):
    sigma = 0.3
    ed = _noise_error_data(getkey(), 2000, sigma)
    cfg = D.ErrorConfig(E_MLP, target="log", log_correction=0.0)
    key = getkey()
    ep = jax.jit(lambda k: D.fit_error_predictor(cfg, k, ed))(key)
    e = D.predict_error(cfg, ep, jnp.linspace(0.05, 0.95, 50)[:, None])
    ratio = float(jnp.mean(e)) / sigma**2
    # exp(E log chi2_1) = 0.2807; same 15% tolerance as above
    assert abs(ratio - math.exp(D.LOG_CHI2_1_MEAN)) < 0.15 * 0.2807 + 0.03
    assert float(jnp.mean(e - sigma**2)) < -0.6 * sigma**2  # the bias the correction removes
    # exact: with the same data and key the network is identical, and the
    # correction only rescales its raw-scale output by exp(-E[log chi2_1]) = 3.56
    # (float32 exp: rtol 1e-5)
    cfg_c = D.ErrorConfig(E_MLP, target="log")
    ep_c = jax.jit(lambda k: D.fit_error_predictor(cfg_c, k, ed))(key)
    e_c = D.predict_error(cfg_c, ep_c, jnp.linspace(0.05, 0.95, 50)[:, None])
    np.testing.assert_allclose(np.asarray(e_c), np.asarray(e) * math.exp(-D.LOG_CHI2_1_MEAN),
                               rtol=1e-5)
    # and the uncorrected e is the geometric mean of the losses (see above): 5%
    gm = np.exp(np.mean(np.log(np.asarray(ed.loss, np.float64) + cfg.floor)))
    assert abs(float(jnp.mean(e)) / gm - 1) < 0.05


# --------------------------------------------------------------------------
# K-fold out-of-sample error data
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kfold_run():
    key = jax.random.key(7)
    x, y = _data(jax.random.fold_in(key, 0))
    fold = D.random_folds(jax.random.fold_in(key, 1), x.shape[0], 4)
    ed, params = D.kfold_error_data(PRED, FEATS, jax.random.fold_in(key, 2), x, y, fold, 4)
    return key, x, y, fold, ed, params


def test_no_row_comes_from_a_model_that_trained_on_it(kfold_run):
    key, x, y, fold, ed, params = kfold_run
    D.check_no_leakage(ed)
    assert not bool(jnp.any(D.leaked_rows(ed)))
    np.testing.assert_array_equal(np.asarray(ed.fold), np.asarray(fold))
    # every row's model trained on all other folds and on nothing of its own fold
    tr = np.asarray(ed.trained_on)
    f = np.asarray(fold)
    np.testing.assert_array_equal(tr, f[None, :] != f[:, None])
    # an injected in-sample row is caught
    bad = ed.replace(trained_on=ed.trained_on.at[3, 3].set(True))
    with pytest.raises(ValueError, match="trained on"):
        D.check_no_leakage(bad)


def test_fold_model_is_blind_to_its_fold_targets(kfold_run):
    # Leakage impossible by construction: changing the targets of fold 0 leaves
    # fold model 0 bit-identical (its weight on those rows is exactly zero).
    key, x, y, fold, ed, params = kfold_run
    y2 = jnp.where(fold == 0, y + 100.0, y)
    _, params2 = D.kfold_error_data(PRED, FEATS, jax.random.fold_in(key, 2), x, y2, fold, 4)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
        np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
        assert not np.allclose(np.asarray(a[1]), np.asarray(b[1]))


def test_vmapped_folds_equal_python_loop(kfold_run):
    key, x, y, fold, ed, params = kfold_run
    keys = jax.random.split(jax.random.fold_in(key, 2), 4)
    fit = jax.jit(lambda k, w: D.fit_predictor(PRED, k, x, y, w))
    for k in range(4):
        w = (fold != k).astype(x.dtype)
        p_loop = fit(keys[k], w)
        for a, b in zip(jax.tree.leaves(p_loop), jax.tree.leaves(params)):
            # float32, 150 Adam steps; batched vs unbatched matmuls may round differently
            np.testing.assert_allclose(np.asarray(a), np.asarray(b[k]), rtol=1e-4, atol=1e-5)
        pred, _ = D.predict(PRED, p_loop, x)
        rows = np.asarray(fold) == k
        np.testing.assert_allclose(np.asarray(jnp.square(pred - y))[rows],
                                   np.asarray(ed.loss)[rows], rtol=1e-3, atol=1e-5)


def test_deterministic_for_a_key(kfold_run):
    key, x, y, fold, ed, params = kfold_run
    ed2, _ = D.kfold_error_data(PRED, FEATS, jax.random.fold_in(key, 2), x, y, fold, 4)
    for a, b in zip(jax.tree.leaves(ed), jax.tree.leaves(ed2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ed3, _ = D.kfold_error_data(PRED, FEATS, jax.random.fold_in(key, 3), x, y, fold, 4)
    assert not np.array_equal(np.asarray(ed.loss), np.asarray(ed3.loss))


# --------------------------------------------------------------------------
# Seen-bit: one convention at training and inference
# --------------------------------------------------------------------------

def test_seen_bit_convention_is_shared(kfold_run):
    key, x, y, fold, ed, params = kfold_run
    seen_col = 1  # phi = [x, b, log q, distance]
    # out-of-sample rows: the point is not in its model's training set -> b = 0
    assert np.all(np.asarray(ed.phi[:, seen_col]) == 0.0)
    # recomputing a row's features at inference, relative to that row's model's
    # training set, reproduces the stored features exactly
    for k in range(4):
        rows = np.flatnonzero(np.asarray(fold) == k)
        phi = D.compute_features(FEATS, x[rows], x, fold != k)
        # same function; only float32 rounding of a differently-batched matmul differs
        np.testing.assert_allclose(np.asarray(phi), np.asarray(ed.phi[rows]),
                                   rtol=1e-5, atol=1e-5)
    # relative to the full training set every training point is seen
    assert np.all(np.asarray(D.seen_bit(x, x, jnp.ones(x.shape[0], bool))) == 1.0)
    # the bit follows the mask, not the array: fold-k points are seen by a model
    # trained on fold k and unseen by one that was not; a point 1e-5 away (10 eps)
    # from every training input is unseen
    for k in range(4):
        xk = x[np.asarray(fold) == k]
        assert np.all(np.asarray(D.seen_bit(xk, x, fold == k)) == 1.0)
        assert np.all(np.asarray(D.seen_bit(xk, x, fold != k)) == 0.0)
    far = x[:5] + 1e-5
    assert float(jnp.min(D.distance_to_data(far, x, jnp.ones(x.shape[0], bool)))) > 1e-6
    assert np.all(np.asarray(D.seen_bit(far, x, jnp.ones(x.shape[0], bool))) == 0.0)


SMO_TINY = D.SMOConfig(
    n_init=6, n_steps=6, num_candidates=256, refit_steps=100,
    deup=D.DEUPConfig(predictor=D.Predictor(D.MLPConfig(hidden=(16,), steps=100, lr=1e-2)),
                      error=D.ErrorConfig(D.MLPConfig(hidden=(16,), steps=100, lr=1e-2)),
                      features=D.FeatureConfig(use_x=True, density=True, distance=True),
                      num_folds=3),
    ensemble=D.Predictor(D.MLPConfig(hidden=(16,), steps=100, lr=1e-2), num_members=2))


def test_acquired_point_eu_drops_after_update():
    out = D.run_smo("deup", D.MULTI_OPTIMA, SMO_TINY, jax.random.key(3))
    before, after = np.asarray(out["u_acq"])[:-1], np.asarray(out["u_acq_after"])[:-1]
    # once (x*, y*) and its out-of-sample row are in, x* is seen: its u drops
    assert np.mean(after < before) >= 0.8, (before, after)
    ed = out["error_data"]
    D.check_no_leakage(ed)
    # acquisition rows carry fold ids num_folds + step, and b = 1 at every acquired
    # point relative to the final data (same seen_bit function)
    n0, T = SMO_TINY.n_init, SMO_TINY.n_steps
    np.testing.assert_array_equal(np.asarray(ed.fold[n0:]), 3 + np.arange(T))
    allx = out["x"]
    # (b = 1 of an acquired point relative to data containing it held by
    # construction.) Real checks: row n0 + t comes from the model trained on
    # exactly the points before it, so x* is unseen by it (b = 0), and its stored
    # features are the inference-time features relative to that training set
    # (same function, differently batched float32 KDE matmul: 1e-5).
    idx = np.arange(n0 + T)
    np.testing.assert_array_equal(np.asarray(ed.point[n0:]), n0 + np.arange(T))
    for t in range(T):
        n = n0 + t
        np.testing.assert_array_equal(np.asarray(ed.trained_on[n]), idx < n)
        prev = jnp.asarray(idx < n)
        assert float(D.seen_bit(allx[n][None], allx, prev)[0]) == 0.0
        phi = D.compute_features(SMO_TINY.deup.features, allx[n][None], allx, prev)
        np.testing.assert_allclose(np.asarray(phi[0]), np.asarray(ed.phi[n]), rtol=1e-5,
                                   atol=1e-5)
    assert np.all(np.diff(np.asarray(out["best"])) >= 0)
    # f and best against a float64 NumPy evaluation of sin(x) cos(5x) cos(22x) on
    # [-1, 2]: f is the objective at x, best the running max (float32 trig at
    # |22x| <= 44: 1e-5)
    xx = -1.0 + 3.0 * np.asarray(allx, np.float64)[:, 0]
    f = np.sin(xx) * np.cos(5 * xx) * np.cos(22 * xx)
    np.testing.assert_allclose(np.asarray(out["f"]), f, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["best"]), np.maximum.accumulate(f)[n0 - 1:],
                               atol=1e-5)


# --------------------------------------------------------------------------
# Features, GP, aleatoric and KL against float64 references
# --------------------------------------------------------------------------

def test_kde_and_distance_match_numpy(x64):
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(30, 2))
    mask = np.arange(30) < 20
    q = rng.normal(size=(7, 2))
    h = 0.4
    got = D.kde_log_density(jnp.asarray(q), jnp.asarray(ref), jnp.asarray(mask), h)
    r = ref[mask]
    d2 = ((q[:, None, :] - r[None]) ** 2).sum(-1)
    want = (scipy.special.logsumexp(-0.5 * d2 / h**2, axis=1) - np.log(20)
            - np.log(2 * np.pi * h * h))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10)
    dist = D.distance_to_data(jnp.asarray(q), jnp.asarray(ref), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(dist), np.sqrt(d2.min(1)), rtol=1e-10)
    bw = D.scott_bandwidth(jnp.asarray(ref), jnp.asarray(mask))
    want_bw = 20 ** (-1 / 6) * np.mean(r.std(0, ddof=1))
    np.testing.assert_allclose(float(bw), want_bw, rtol=1e-10)


def test_gp_marginal_likelihood_and_posterior_match_scipy(x64):
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(12, 2))
    y = np.sin(3 * x[:, 0]) + 0.1 * rng.normal(size=12)
    mask = np.arange(12) < 9  # 3 padded points must not matter
    p = D.GPParams(jnp.log(jnp.array([0.3, 0.5])), jnp.log(1.2), jnp.log(0.1))
    xs, ys = x[mask], y[mask]
    d = (xs[:, None, :] - xs[None]) / np.array([0.3, 0.5])
    K = 1.44 * np.exp(-0.5 * (d**2).sum(-1)) + (0.01 + 1e-6) * np.eye(9)
    want = -scipy.stats.multivariate_normal(np.zeros(9), K).logpdf(ys)
    got = D.gp_neg_mll(p, jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask))
    np.testing.assert_allclose(float(got), want, rtol=1e-9)
    xq = rng.uniform(size=(5, 2))
    dq = (xq[:, None, :] - xs[None]) / np.array([0.3, 0.5])
    ks = 1.44 * np.exp(-0.5 * (dq**2).sum(-1))
    mean_w = ks @ np.linalg.solve(K, ys)
    var_w = 1.44 - np.einsum("ij,ji->i", ks, np.linalg.solve(K, ks.T))
    mean, var = D.gp_posterior(p, jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask),
                               jnp.asarray(xq))
    np.testing.assert_allclose(np.asarray(mean), mean_w, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.asarray(var), var_w, rtol=1e-6, atol=1e-10)
    fitted = D.fit_gp(jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask), steps=100)
    assert float(D.gp_neg_mll(fitted, jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask))) < \
        float(D.gp_neg_mll(D.gp_init(2), jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask)))


def test_repeat_variance_is_unbiased_sample_variance():
    y = np.random.default_rng(3).normal(size=(10, 4))
    np.testing.assert_allclose(np.asarray(D.repeat_variance(jnp.asarray(y))),
                               y.var(1, ddof=1), rtol=1e-5)


def test_heteroscedastic_aleatoric_recovers_noise_level(getkey):
    x = jax.random.uniform(getkey(), (2000, 1))
    s = 0.1 + 0.4 * x[:, 0]
    y = jnp.sin(3 * x[:, 0]) + s * jax.random.normal(getkey(), (2000,))
    cfg = D.MLPConfig(hidden=(32,), steps=800, lr=1e-2, activation="silu")
    params = jax.jit(lambda k: D.fit_heteroscedastic(cfg, k, x, y))(getkey())
    _, a = D.predict_heteroscedastic(cfg, params, jnp.array([[0.2], [0.8]]))
    want = np.array([0.18, 0.42]) ** 2
    # 2000 samples, ~400 per local window: variance estimates within ~25%
    np.testing.assert_allclose(np.asarray(a), want, rtol=0.3)
    # on a 9-point grid (0.2 and 0.8 included) the variance is the square of
    # s(x) = 0.1 + 0.4 x, not s(x) or a constant: measured errors <= 9%, so 20%
    # (~2.5 local SE of a variance from ~300 points, sqrt(2/300) = 8%); and it
    # increases with x (adjacent true ratios >= 1.19, errors vary smoothly).
    xg = jnp.linspace(0.1, 0.9, 9)[:, None]
    _, ag = D.predict_heteroscedastic(cfg, params, xg)
    np.testing.assert_allclose(np.asarray(ag), (0.1 + 0.4 * np.asarray(xg[:, 0])) ** 2,
                               rtol=0.2)
    assert np.all(np.diff(np.asarray(ag)) > 0)


def test_log_loss_excess_risk_is_kl(x64):
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(5), size=6)
    q = rng.dirichlet(np.ones(5), size=6)
    risk = -(p * np.log(q)).sum(1)
    aleatoric = -(p * np.log(p)).sum(1)  # Bayes predictor's risk = entropy
    np.testing.assert_allclose(np.asarray(D.excess_risk_log_loss(jnp.asarray(p),
                                                                 jnp.asarray(q))),
                               risk - aleatoric, rtol=1e-10)
    np.testing.assert_allclose(
        np.asarray(D.epistemic_uncertainty(jnp.asarray(risk), jnp.asarray(aleatoric))),
        np.maximum(risk - aleatoric, 0), rtol=1e-12)
    # independent KL reference (SciPy), including p with zeros (0 log 0 = 0)
    p0 = p.copy()
    p0[:, 0] = 0.0
    p0 /= p0.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(D.excess_risk_log_loss(jnp.asarray(p0),
                                                                 jnp.asarray(q))),
                               scipy.stats.entropy(p0, q, axis=1), rtol=1e-10)
    # KL >= 0 never exercises the clip above; e < a must give exactly 0
    np.testing.assert_array_equal(
        np.asarray(D.epistemic_uncertainty(jnp.asarray(aleatoric), jnp.asarray(risk))), 0.0)


def test_expected_improvement_closed_form(x64):
    m, s, best = 0.3, 0.5, 0.1
    z = (m - best) / s
    want = (m - best) * scipy.stats.norm.cdf(z) + s * scipy.stats.norm.pdf(z)
    assert abs(float(D.expected_improvement(jnp.array(m), jnp.array(s), best)) - want) < 1e-12


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------

def test_bad_input_raises_clear_errors(getkey):
    x, y = _data(getkey(), 16)
    with pytest.raises(ValueError, match="x must have rank 2"):
        D.fit_deup(CFG, getkey(), x[:, 0], y)
    with pytest.raises(ValueError, match="y must have shape"):
        D.fit_deup(CFG, getkey(), x, y[:5])
    with pytest.raises(ValueError, match="NaN"):
        D.fit_deup(CFG, getkey(), x, y.at[0].set(jnp.nan))
    with pytest.raises(TypeError, match="integer labels"):
        cls = D.Predictor(F_MLP, task="classification", num_classes=3)
        D.kfold_error_data(cls, FEATS, getkey(), x, y, jnp.zeros(16, jnp.int32), 2)
    with pytest.raises(ValueError, match="fold ids"):
        D.kfold_error_data(PRED, FEATS, getkey(), x, y, jnp.full((16,), 5, jnp.int32), 4)
    with pytest.raises(ValueError, match="no training point"):
        D.kfold_error_data(PRED, FEATS, getkey(), x, y, jnp.zeros(16, jnp.int32), 1)
    with pytest.raises(ValueError, match="dropout"):
        D.MLPConfig(dropout=1.5)
    with pytest.raises(ValueError, match="target"):
        D.ErrorConfig(target="sqrt")
    with pytest.raises(ValueError, match="num_folds"):
        D.DEUPConfig(num_folds=1)
    with pytest.raises(ValueError, match="variance"):
        D.DEUPConfig(features=D.FeatureConfig(variance=True))
    with pytest.raises(ValueError, match="method"):
        D.run_smo("ucb", D.MULTI_OPTIMA, SMO_TINY, getkey())
    with pytest.raises(ValueError, match="aleatoric"):
        D.epistemic_uncertainty(jnp.ones(3), jnp.ones(4))
    with pytest.raises(ValueError, match="repeats"):
        D.repeat_variance(jnp.ones((4, 1)))
    with pytest.raises(ValueError, match="noise_var"):
        D.known_noise(-1.0, 3)
    with pytest.raises(ValueError, match="mc_samples"):
        D.Predictor(F_MLP, mc_samples=5)


def test_smo_equivalence_margins_are_half_the_basin_gaps():
    """experiments/deup.py's SMO "not worse" margins are half the gap between each
    objective's global optimum and its best other local optimum (dense grid of
    the closed form), as their comment says."""
    from scipy.ndimage import maximum_filter
    from scipy.signal import argrelmax

    from gapjax.experiments.deup import SMO_EQUIV_MARGIN

    x = np.linspace(-1, 2, 3_000_001)
    f = np.sin(x) * np.cos(5 * x) * np.cos(22 * x)
    top = np.sort(f[argrelmax(f)[0]])[::-1][:2]
    a = np.linspace(-10, 10, 4001)   # step 0.005: the Levy ripples have period 2/3
    A, B = np.meshgrid(a, a)
    g = -np.asarray(D.neg_levy_n13(jnp.stack([A.ravel(), B.ravel()], 1))).reshape(A.shape)
    loc = np.sort(g[g == -maximum_filter(-g, size=5)])[:2]
    # 4-digit constants in the module: agree to 1e-4
    assert abs(SMO_EQUIV_MARGIN["multi_optima"] - (top[0] - top[1]) / 2) < 1e-4
    assert abs(SMO_EQUIV_MARGIN["levy_n13"] - (loc[1] - loc[0]) / 2) < 1e-4
