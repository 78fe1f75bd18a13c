"""Tests for gapjax.scaling: exact identities (float64), Monte Carlo vs closed forms,
deterministic equivalents vs finite-d simulation, precision, bad inputs.

Monte Carlo comparisons use |z| = |MC - exact| / SE < Z_MAX = 4.5 over all cells
of a test (a few hundred correlated cells at most: P(max |z| > 4.5) < 0.3% per
test for Gaussian errors; keys are fixed so the tests are deterministic).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import gapjax.scaling as gs

Z_MAX = 4.5
KS = (1, 2, 5, 20)          # one static k-set for the quadrature (one compilation)


def _exact(dT, dR, s2, T, ks=KS):
    return np.asarray(gs.softmax_error_exact(dT, dR, s2, T, ks))


# ------------------------------------------------------------------ exact identities
def test_k1_identity_every_T(x64):
    # k = 1: delta = Delta_T^2 + s^2 for every T (T = 0 through the best-of-k
    # integral). Both quadratures are good to ~1e-10 relative here.
    dT, dR, s2 = 0.3, -0.8, 1.7
    for T in (0.0, 1e-6, 1e-2, 0.5, 3.0, 50.0, 1e4):
        v = _exact(dT, dR, s2, T)[0]
        assert abs(v / (dT**2 + s2) - 1) < 1e-9, (T, v)


def test_high_temperature_limit_and_first_order(x64):
    dT, dR, s2 = 0.5, -0.7, 1.0
    k = np.asarray(KS, float)
    c1 = s2 + 2 * dR * dT
    errs = []
    for T in (1e2, 1e3, 1e4):
        v = _exact(dT, dR, s2, T)
        first = -(1 - 1 / k) * (2 * s2 / T) * c1
        errs.append(np.max(np.abs((v - v[0] - first)[1:] / first[1:])))
    # delta(k) -> delta(1): the relative error of the first-order correction is
    # O(1/T): it drops ~10x per decade (allow 7x) and is < 1e-3 at T = 1e4 s^2.
    assert errs[1] < errs[0] / 7 and errs[2] < errs[1] / 7, errs
    assert errs[2] < 1e-3
    v = _exact(dT, dR, s2, 1e8)
    assert np.max(np.abs(v / v[0] - 1)) < 1e-7      # T -> inf: delta(k) = delta(1)


def test_expansion_exact_to_second_order(x64):
    # The spec's expansion truncated after C0 has error O(a_T^3) (ratio ~1000 per
    # decade of T); the D0 term is the k -> inf limit of the true a_T^3
    # coefficient (checked: residual/a^3 vs D0 u3/a^3 within 5% at k = 100, and
    # the difference shrinks with k).
    dT, dR, s2 = 0.5, -0.7, 1.0
    ks = (2, 5, 20, 100)
    k = np.asarray(ks, float)
    u1 = 1 - 1 / k
    u2 = u1 * (1 - 2 / k)
    u3 = u2 * (1 - 3 / k)
    res = []
    for T in (3e2, 3e3):
        v = np.asarray(gs.softmax_error_exact(dT, dR, s2, T, ks))
        A0, B0, C0, D0 = gs.expansion_coefficients(dT, dR, s2, T)
        a = 2 * s2 / T
        res.append((v - A0 - B0 * u1 - C0 * u2) / a**3)
        third = D0 * u3 / a**3
    np.testing.assert_allclose(res[0], res[1], rtol=2e-2, atol=2e-2)  # residual = O(a^3)
    rel = np.abs(res[1] / third - 1)
    assert rel[-1] < 0.05 and rel[-1] < rel[-2], rel


def test_low_temperature_converges_to_best_of_k(x64):
    dT, dR, s2 = 0.4, -0.3, 2.0
    bok = np.asarray(gs.best_of_k_exact(dT, dR, s2, KS))
    errs = [np.max(np.abs(_exact(dT, dR, s2, t * s2) / bok - 1)) for t in (1e-2, 1e-4, 1e-6)]
    # softmax -> argmin as T -> 0 (difference O(k^2 T/s^2)).
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-5, errs
    np.testing.assert_allclose(_exact(dT, dR, s2, 0.0), bok, rtol=1e-12)


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
def test_best_of_k_matches_spec_integral(x64):
    # Independent reference: SciPy quad of the spec's w-integral,
    # delta = s^2 int k phi(w) [1 - Phi(c'+r) + Phi(c'-r)]^{k-1} (w - b)^2 dw.
    for dT, dR, s2 in ((0.3, -0.6, 1.3), (1.2, 1.2, 0.7), (0.0, 2.5, 1.0)):
        s = math.sqrt(s2)
        c, b = -dR / s, -dT / s
        for k in (1, 3, 30, 300):
            def f(w):
                r = abs(w - c)
                surv = 1 - stats.norm.cdf(c + r) + stats.norm.cdf(c - r)
                return k * stats.norm.pdf(w) * surv ** (k - 1) * (w - b) ** 2
            pts = [c - 20 / k, c, c + 20 / k]
            ref = s2 * sum(integrate.quad(f, lo, hi, limit=400, epsabs=0, epsrel=1e-11)[0]
                           for lo, hi in zip([-40] + pts, pts + [40]))
            got = float(gs.best_of_k_exact(dT, dR, s2, [k])[0])
            # composite Gauss-Legendre (24 nodes/segment) vs adaptive quad.
            assert abs(got / ref - 1) < 1e-8, (dT, dR, k, got, ref)


def test_extreme_value_law_and_slope(x64):
    dT, s2 = 0.5, 1.0
    ks = np.array([100, 1000, 10000, 20000])
    v = np.asarray(gs.best_of_k_exact(dT, dT, s2, ks))          # mu_R = mu_T
    rel = np.abs(v / np.asarray(gs.extreme_value_pointwise(dT, s2, ks)) - 1)
    # k^2 delta -> pi s^2 exp(Delta^2/s^2); the correction is O(1/k) (~3/k here).
    assert rel[0] > rel[1] > rel[2] and rel[2] < 1e-3, rel
    slope = math.log(v[3] / v[2]) / math.log(2)
    assert abs(slope + 2) < 1e-3, slope


def test_large_k_limit(x64):
    dT, dR, s2, T = 0.5, -0.7, 1.0, 0.5
    v = np.asarray(gs.softmax_error_exact(dT, dR, s2, T, [100, 1000, 10000]))
    rel = np.abs(v / float(gs.large_k_limit(dT, dR, s2, T)) - 1)
    # approach O(1/k): ~10x per decade (allow 7x), < 1e-4 at k = 1e4.
    assert rel[1] < rel[0] / 7 and rel[2] < rel[1] / 7 and rel[2] < 1e-4, rel


def test_bayes_optimal_identity(x64, getkey):
    # w_T ~ N(0, gamma^2 I): Cov(wbar - w_T | X) = Lambda^{-1} exactly, so
    # E[(m - mu_T)^2] = x^T Lambda^{-1} x = E[s^2] - sigma^2 at finite d.
    d, n, sigma, gamma = 6, 15, 0.7, 1.3
    X = gs.sample_inputs(getkey(), n, d, 1.0)
    post = gs.fit_posterior(X, jnp.zeros(n), sigma, gamma)
    lam_inv = np.asarray(post.cov)
    A = lam_inv @ np.asarray(X).T / sigma**2               # wbar = A y
    M = A @ np.asarray(X) - np.eye(d)                        # wbar - w = M w + A eps
    cov = gamma**2 * M @ M.T + sigma**2 * A @ A.T
    np.testing.assert_allclose(cov, lam_inv, rtol=1e-10, atol=1e-14)
    # Monte Carlo over (w_T, eps) through the real fit.
    N = 20000
    W = gamma * jax.random.normal(getkey(), (N, d))
    Y = W @ X.T + sigma * jax.random.normal(getkey(), (N, n))
    fits = jax.vmap(lambda y: gs.fit_posterior(X, y, sigma, gamma))(Y)
    xt = gs.sample_inputs(getkey(), 4, d, 1.0)
    err2 = ((fits.mean - W) @ xt.T) ** 2                      # [N, 4]
    _, s2 = gs.predictive(post, xt)
    z = (np.mean(err2, 0) - (np.asarray(s2) - sigma**2)) / (np.std(err2, 0) / math.sqrt(N))
    assert np.max(np.abs(z)) < Z_MAX, z


def test_renormalized_ridge_solves_its_equation(x64):
    for a, S, sigma, gamma in ((1e-3, 1.0, 1e-4, 1e-3), (0.5, 1.3, 0.5, 1.0),
                               (3.0, 0.7, 0.2, 2.0), (1.0, 1.0, 1e-3, 1.0)):
        R = float(gs.renormalized_ridge(a, S, sigma, gamma))
        rhat = a * sigma**2 / gamma**2
        assert R > 0 and abs(R * (1 - a * S**2 / (S**2 + R)) / rhat - 1) < 1e-12


def test_optimal_temperature_formula_minimises_second_order(x64):
    # t* = 2(1-2/k) C2/C1 is the exact minimiser of A0 + B0 u1 + C0 u2 in a_T.
    dT, dR, s2, k = 0.3, 1.9, 1.0, 16
    C1, C2 = gs.temperature_coefficients(dT, dR, s2)
    T_f = float(gs.optimal_temperature_formula(C1, C2, k, s2))

    def second(T):
        A0, B0, C0, _ = gs.expansion_coefficients(dT, dR, s2, T)
        u1 = 1 - 1 / k
        return A0 + B0 * u1 + C0 * u1 * (1 - 2 / k)

    T_j, _ = gs.minimize_log_scalar(second, 0.1, 1e3, iters=80)
    T_p, _ = gs.minimize_log_scalar(second, 0.1, 1e3, iters=80, python_loop=True)
    assert abs(float(T_j) / T_f - 1) < 1e-6 and abs(T_p / T_f - 1) < 1e-6
    # The exact delta(T) has an interior minimum too (checked against a grid).
    f = lambda T: gs.softmax_error_exact(dT, dR, s2, T, (k,))[0]
    T_e, d_e = gs.minimize_log_scalar(f, 0.05, 200.0, iters=30, python_loop=True)
    grid = [float(f(T)) for T in np.geomspace(0.05, 200.0, 9)]
    assert d_e <= min(grid) + 1e-12 and 0.05 < T_e < 200.0


# ------------------------------------------------------------------ Monte Carlo
def test_mc_engine_matches_direct_sampler(x64):
    # The fused online-softmax scan equals sum_i p_i e_i on the same draws.
    key = jax.random.key(3)
    dT = jnp.array([0.2, -0.5])
    dR = jnp.array([[0.1, 1.5], [-0.4, 0.0]])
    s2 = jnp.array([1.0, 0.3])
    ks, temps, tr = (1, 3, 7), jnp.array([0.0, 0.05, 2.0]), 4
    mean, _ = gs.mc_delta_points(key, dT, dR, s2, ks, temps, tr)      # [B, nk, J, nT]
    z = jnp.stack([jax.random.normal(jax.random.fold_in(key, i), (2, tr), jnp.float32)
                   for i in range(max(ks))], -1).astype(jnp.float64)  # [B, tr, kmax]
    y = jnp.sqrt(s2)[:, None, None] * z                                # y - m
    for b in range(2):
        for j in range(2):
            for t, T in enumerate(np.asarray(temps)):
                for i, k in enumerate(ks):
                    ref = gs.sampler_error(y[b, :, :k], jnp.full(tr, -dT[b]),
                                           jnp.full(tr, -dR[b, j]), T).mean()
                    assert abs(float(mean[b, i, j, t]) - float(ref)) < 1e-12 * (1 + float(ref))


def test_mc_agrees_with_closed_forms(x64, getkey):
    B, tr = 3000, 20
    dT, dR, s2 = 0.4, -0.9, 1.5
    temps = np.array([0.0, 0.1, 1.5, 300.0])
    mean, var = gs.mc_delta_points(getkey(), jnp.full(B, dT), jnp.full(B, dR),
                                   jnp.full(B, s2), KS, temps, tr)
    m = np.asarray(mean).mean(0)                                     # [nk, nT]
    se = np.sqrt(np.asarray(var).sum(0)) / B
    exact = np.stack([_exact(dT, dR, s2, T) for T in temps], -1)
    assert np.max(np.abs((m - exact) / se)) < Z_MAX
    # T = 0 against the best-of-k integral, high T against the expansion.
    bok = np.asarray(gs.best_of_k_exact(dT, dR, s2, KS))
    assert np.max(np.abs((m[:, 0] - bok) / se[:, 0])) < Z_MAX
    hte = np.asarray(gs.high_temperature_expansion(dT, dR, s2, 300.0, KS))
    assert np.max(np.abs((m[:, 3] - hte) / se[:, 3])) < Z_MAX
    # k -> inf limit (bias O(1/k) ~ 1e-4 << SE) and the extreme-value law.
    big = (2000,)
    mean, var = gs.mc_delta_points(getkey(), jnp.full(200, dT), jnp.full(200, dR),
                                   jnp.full(200, s2), big, np.array([0.5]), 10)
    z = (float(mean.mean()) - float(gs.large_k_limit(dT, dR, s2, 0.5))) / math.sqrt(
        float(var.sum()) / 200**2)
    assert abs(z) < Z_MAX
    mean, var = gs.mc_delta_points(getkey(), jnp.full(200, dT), jnp.full(200, dT),
                                   jnp.full(200, s2), big, np.array([0.0]), 10)
    z = (float(mean.mean()) - float(gs.extreme_value_pointwise(dT, s2, 2000))) / math.sqrt(
        float(var.sum()) / 200**2)
    assert abs(z) < Z_MAX


def test_stream_and_delta_monte_carlo(x64, getkey):
    # Streaming statistics equal the direct ones (partial last chunk masked), and
    # the simulated curve agrees with the exact finite-d and DE quadratures.
    d, n, sigma, gamma, S = 4, 400, 0.3, 0.5, 1.0
    w = jnp.array([1.0, -0.5, 0.3, 0.8])
    X, y = gs.sample_training_data(getkey(), w, n, S, sigma)
    post = gs.fit_posterior(X, y, sigma, gamma)
    key = getkey()
    fn = lambda k, x, p: {"dT": x @ (p.mean - w)}
    mean, se = gs.stream_test_points(key, fn, 1000, 384, d, S, params=post)
    xs = [gs.sample_inputs(jax.random.split(jax.random.fold_in(key, i))[0], 384, d, S)
          for i in range(3)]
    v = np.asarray(jnp.concatenate(xs)[:1000] @ (post.mean - w))
    assert abs(float(mean["dT"]) - v.mean()) < 1e-13
    assert abs(float(se["dT"]) - v.std(ddof=1) / math.sqrt(1000)) < 1e-12

    R = float(gs.renormalized_ridge(d / n, S, sigma, gamma))
    T = 0.2 * sigma**2
    mean, se = gs.delta_monte_carlo(getkey(), post, w, [0.0, 3.0], KS, [T], num_test=3000,
                                    num_trials=20, S=S, chunk_size=500,
                                    de=dict(R=R, gamma=gamma))
    for j, c in enumerate((0.0, 3.0)):
        ex = np.asarray(gs.softmax_error_averaged(gs.posterior_nodes(post, w, c, S), [T],
                                                  KS))[0]
        z = (np.asarray(mean["delta"])[:, j, 0] - ex) / np.asarray(se["delta"])[:, j, 0]
        assert np.max(np.abs(z)) < Z_MAX, z
        de = np.asarray(gs.softmax_error_averaged(
            gs.de_nodes(c, d / n, S, sigma, gamma, float(w @ w), d), [T], KS))[0]
        z = (np.asarray(mean["delta_de"])[:, j, 0] - de) / np.asarray(se["delta_de"])[:, j, 0]
        assert np.max(np.abs(z)) < Z_MAX, z


# ------------------------------------------------------------------ deterministic equivalents
def _avg_excess(post, X, w, sigma, S, rotate=False):
    """E_{eps, x}[(m - mu_T)^2] given X (exact over noise and test point); with
    ``rotate`` also averaged over the direction of w_T at fixed ||w_T||."""
    d = X.shape[1]
    A = post.cov @ X.T / sigma**2
    M = A @ X - jnp.eye(d)
    bias = float(w @ w) / d * jnp.sum(M**2) if rotate else (M @ w) @ (M @ w)
    return float((bias + sigma**2 * jnp.trace(A @ A.T)) * S**2 / d)


def test_de_converges_with_d(x64):
    # Proportional regime a = d/n = 1/2: pointwise s^2 vs s^2_DE (RMS relative
    # error over x) shrinks like d^{-1/2}; the ridge DE of E[(m - mu_T)^2]
    # (exact over noise, test point and the direction of w_T) converges as d
    # grows (trace fluctuations ~1/d), while the paper's DE (no variance /
    # fluctuation term) stays O(1) off.
    sigma, gamma, S = 0.5, 1.0, 1.0
    ds = (32, 128, 512)
    pt, ridge, paper = [], [], []
    for d in ds:
        n = 2 * d
        R = float(gs.renormalized_ridge(d / n, S, sigma, gamma))
        e_p, e_r, e_s = [], [], []
        for sd in range(4):
            w = gs.sample_teacher(jax.random.key(100 + sd), d, 1.0)
            X, y = gs.sample_training_data(jax.random.key(sd), w, n, S, sigma)
            post = gs.fit_posterior(X, y, sigma, gamma)
            ex = _avg_excess(post, X, w, sigma, S, rotate=True)
            wn = float(w @ w)
            e_r.append(abs(ex / float(gs.de_error_ridge(d / n, R, S, sigma, wn, d)) - 1))
            e_p.append(abs(ex / float(gs.de_error_paper(R, S, wn, d)) - 1))
            xt = gs.sample_inputs(jax.random.key(50 + sd), 1000, d, S)
            _, s2 = gs.predictive(post, xt)
            _, s2de = gs.de_predictive(xt @ w, jnp.sum(xt**2, -1), R, S, sigma, gamma)
            e_s.append(float(jnp.sqrt(jnp.mean(((s2 - sigma**2) / (s2de - sigma**2) - 1) ** 2))))
        pt.append(np.mean(e_s))
        ridge.append(np.mean(e_r))
        paper.append(np.mean(e_p))
    slope = np.polyfit(np.log(ds), np.log(pt), 1)[0]
    assert -0.7 < slope < -0.3, (slope, pt)            # d^{-1/2}
    assert ridge[0] > ridge[1] > ridge[2] and ridge[2] < 0.01, ridge
    assert min(paper) > 1.0, paper                      # O(1) miss in this regime


def test_paper_de_in_small_a_regime(x64):
    # Official regime (a = 1e-3): both DEs match E[(m - mu_T)^2] of the exact
    # posterior within 10% (finite-d fluctuation of X at d = 10, over 4 fits).
    d, n, sigma, gamma, S = 10, 10_000, 1e-4, 1e-3, 1.0
    w = gs.sample_teacher(jax.random.key(7), d, 2.0)
    R = float(gs.renormalized_ridge(d / n, S, sigma, gamma))
    ex = []
    for sd in range(4):
        X, y = gs.sample_training_data(jax.random.key(sd), w, n, S, sigma)
        ex.append(_avg_excess(gs.fit_posterior(X, y, sigma, gamma), X, w, sigma, S))
    wn = float(w @ w)
    for de in (gs.de_error_paper(R, S, wn, d), gs.de_error_ridge(d / n, R, S, sigma, wn, d)):
        assert abs(np.mean(ex) / float(de) - 1) < 0.1


def test_float32_fit_would_have_failed():
    # Official scale: the shrinkage wbar - w_T ~ 1e-5 |w_T| is float32 round-off
    # size. On the same data, the float32 fit changes E[(m - mu_T)^2] by > 0.5% in
    # the median over fits (measured ~2% on XLA:CPU) -- more than 3x the standard
    # error (~0.14%) of a 10^6-point Monte Carlo, so float32 would fail the
    # z < 4.5 comparisons -- while float64 agrees with an independent NumPy
    # float64 solve to < 1e-8.
    d, n, sigma, gamma = 10, 10_000, 1e-4, 1e-3
    rel32, rel64 = [], []
    for sd in range(6):
        with jax.enable_x64(True):
            w = gs.sample_teacher(jax.random.key(100), d, 2.0)
            X, y = gs.sample_training_data(jax.random.key(sd), w, n, 1.0, sigma)
            p64 = gs.fit_posterior(X, y, sigma, gamma)
            Xn, yn, wn = (np.asarray(v, np.float64) for v in (X, y, w))
        lam = np.eye(d) / gamma**2 + Xn.T @ Xn / sigma**2
        ref = np.linalg.solve(lam, Xn.T @ yn / sigma**2) - wn
        e_ref = ref @ ref
        e64 = float(np.sum((np.asarray(p64.mean) - wn) ** 2))
        with jax.enable_x64(False):
            p32 = gs.fit_posterior(jnp.asarray(Xn, jnp.float32), jnp.asarray(yn, jnp.float32),
                                   sigma, gamma)
            m32 = np.asarray(p32.mean, np.float64)
        e32 = float(np.sum((m32 - wn) ** 2))
        rel32.append(abs(e32 / e_ref - 1))
        rel64.append(abs(e64 / e_ref - 1))
    assert max(rel64) < 1e-8, rel64
    assert np.median(rel32) > 5e-3, rel32


# ------------------------------------------------------------------ model pieces and errors
def test_sampler_pieces(x64, getkey):
    y = jax.random.normal(getkey(), (3, 5))
    p = gs.softmax_weights(y, jnp.zeros(3), 0.7)
    np.testing.assert_allclose(np.asarray(p.sum(-1)), 1.0, rtol=1e-12)
    hard = gs.softmax_weights(y, jnp.zeros(3), 0.0)
    assert np.all(np.asarray(hard.argmax(-1)) == np.asarray(jnp.abs(y).argmin(-1)))
    np.testing.assert_allclose(np.asarray(gs.softmax_weights(y, jnp.zeros(3), 1e12)), 0.2,
                               rtol=1e-9)
    mu_R = gs.judge_mean(jnp.array(1.0), jnp.array(1.2), 3.0)
    assert abs(float(mu_R) - (1.0 - 3.0 * 0.2)) < 1e-12          # Delta_R = (1+c) Delta_T
    assert gs.optimal_k([3.0, 2.0, 2.5], [1, 2, 3]) == (2, 2.0, True)
    assert gs.optimal_k([3.0, 2.0, 1.5], [1, 2, 3])[2] is False


def test_vmap_over_temperatures_and_points(x64):
    nodes = (np.array([0.1, -0.4]), np.array([0.3, 0.2]), np.array([1.0, 1.4]),
             np.array([0.25, 0.75]))
    temps = np.array([0.3, 4.0])
    avg = np.asarray(gs.softmax_error_averaged(nodes, temps, KS))
    ref = np.stack([sum(w * _exact(a, b, c, T) for a, b, c, w in zip(*nodes))
                    for T in temps])
    np.testing.assert_allclose(avg, ref, rtol=1e-12)


def test_softmax_error_averaged_chunks_nodes(x64):
    # Values: chunks of 3 over 7 nodes (a remainder chunk) equal all nodes at once;
    # the same per-node arithmetic, only the batching differs: agreement ~1e-15.
    rng = np.random.default_rng(0)
    nodes = (rng.normal(size=7) * 0.3, rng.normal(size=7) * 0.3, 0.5 + rng.random(7),
             np.full(7, 1 / 7))
    kw = dict(num_t=256, num_rho=32)
    whole = np.asarray(gs.softmax_error_averaged(nodes, [0.2, 3.0], KS, node_chunk=7, **kw))
    parts = np.asarray(gs.softmax_error_averaged(nodes, [0.2, 3.0], KS, node_chunk=3, **kw))
    np.testing.assert_allclose(parts, whole, rtol=1e-12)
    with pytest.raises(ValueError, match="node_chunk"):
        gs.softmax_error_averaged(nodes, [0.2], KS, node_chunk=0)
    # Memory: issue 17's 120 x 12 rule (1,440 nodes) at the default 2048 x 128 grid
    # asked for 25.9 GB evaluated at once. Compiled (not run), the default chunking
    # needs 0.24 GB of temporaries (< 1 GB) and the unchunked program 21 GB (> 10 GB),
    # i.e. the rule would not fit a small memory cap unchunked.
    from gapjax.scaling._closed import _softmax_avg
    vec = jax.ShapeDtypeStruct((1440,), jnp.float64)
    temps = jax.ShapeDtypeStruct((1,), jnp.float64)

    def temp_bytes(chunk):
        c = _softmax_avg.lower(vec, vec, vec, vec, temps, (2.0, 8.0), 2048, 128, 12.0,
                               chunk).compile()
        return c.memory_analysis().temp_size_in_bytes

    default_chunk = 2**22 // (2048 * 128)
    assert temp_bytes(1440) > 10e9
    assert temp_bytes(default_chunk) < 1e9


def test_bad_inputs():
    with pytest.raises(ValueError, match="s2"):
        gs.softmax_error_exact(0.1, 0.2, -1.0, 1.0, KS)
    with pytest.raises(ValueError, match="ks"):
        gs.softmax_error_exact(0.1, 0.2, 1.0, 1.0, [0, 1])
    with pytest.raises(ValueError, match="ks"):
        gs.best_of_k_exact(0.1, 0.2, 1.0, [1.5])
    with pytest.raises(ValueError, match="temps"):
        gs.softmax_error_exact(0.1, 0.2, 1.0, -1.0, KS)
    with pytest.raises(ValueError, match="delta_T"):
        gs.softmax_error_exact(float("nan"), 0.2, 1.0, 1.0, KS)
    with pytest.raises(ValueError, match="scalars"):
        gs.best_of_k_exact(np.zeros(2), 0.2, 1.0, KS)
    with pytest.raises(ValueError, match="s2"):
        gs.mc_delta_points(jax.random.key(0), jnp.zeros(3), jnp.zeros(3), jnp.ones(4), KS,
                           [1.0], 4)
    with pytest.raises(ValueError, match="num_trials"):
        gs.mc_delta_points(jax.random.key(0), jnp.zeros(3), jnp.zeros(3), jnp.ones(3), KS,
                           [1.0], 1)
    with pytest.raises(ValueError, match="temps"):
        gs.mc_delta_points(jax.random.key(0), jnp.zeros(3), jnp.zeros(3), jnp.ones(3), KS,
                           [-1.0], 4)
    with pytest.raises(ValueError, match="y must have shape"):
        gs.fit_posterior(jnp.ones((5, 2)), jnp.ones(4), 1.0, 1.0)
    with pytest.raises(ValueError, match="gamma"):
        gs.fit_posterior(jnp.ones((5, 2)), jnp.ones(5), 1.0, -1.0)
    with pytest.raises(ValueError, match="sigma"):
        gs.renormalized_ridge(0.1, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="k > 2"):
        gs.optimal_temperature_formula(1.0, 2.0, 2, 1.0)
    with pytest.raises(ValueError, match=r"x must have shape"):
        post = gs.Posterior(jnp.zeros(3), jnp.eye(3), jnp.asarray(1.0))
        gs.predictive(post, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="kind"):
        gs.de_nodes(1.0, 0.1, 1.0, 1.0, 1.0, 1.0, 3, kind="other")
    with pytest.raises(TypeError, match="nodes"):
        gs.best_of_k_averaged((np.ones(2),), KS)


def test_posterior_nodes_resolve_low_temperature_feature(x64):
    # Regression (full-size Exp2 "miss", |z| = 5.5): at low T with a strongly
    # misspecified judge (k = 50, c = 15, T/(2 sigma^2) = 0.5, E[Delta_T^2] ~
    # 0.04 sigma^2, the paper's scale) the per-point error rises from 0.34 to
    # 3.8 sigma^2 within ~1 std of Delta_T. The test-point average must match an
    # independent adaptive (scipy.quad) integral of the same per-point function
    # over the Gaussian test-point variable; the default trapezoid rule is good
    # to ~1e-9 relative here, Gauss-Hermite with 24 nodes (the old rule) is off
    # by ~1%. Tolerance 1e-6 leaves margin over quad's own 1e-9 target.
    d, S, sigma, c, k = 10, 1.0, 1e-4, 15.0, 50
    T = 2 * sigma**2 * 0.5
    w_T = np.linspace(-2.0, 2.0, d)
    dw = 6.5e-5 * np.cos(np.arange(d)) / np.linalg.norm(np.cos(np.arange(d)))
    cov = np.diag(np.linspace(0.5e-11, 1.5e-11, d))
    post = gs.Posterior(jnp.asarray(w_T + dw), jnp.asarray(cov), jnp.asarray(sigma))
    # Independent per-point law: Delta_T = x.dw = (S/sqrt d) ||dw|| g, and
    # E[s^2 | g] = sigma^2 + (S^2/d) (g^2 u'Cu + tr C - u'Cu), u = dw/||dw||.
    u = dw / np.linalg.norm(dw)
    uCu = u @ cov @ u

    def integrand(g):
        dT = S / math.sqrt(d) * np.linalg.norm(dw) * g
        s2 = sigma**2 + S**2 / d * (g**2 * uCu + np.trace(cov) - uCu)
        val = float(gs.softmax_error_exact(dT, (1 + c) * dT, s2, T, (k,), num_t=512,
                                           num_rho=48)[0])
        return val * stats.norm.pdf(g)

    # even integrand: 2 x the half line, breakpoints at the feature
    ref = 2 * integrate.quad(integrand, 0.0, 9.0, points=[0.5, 1.0, 1.5, 2.0, 4.0],
                             epsabs=0.0, epsrel=1e-9, limit=200)[0]
    got = float(gs.softmax_error_averaged(gs.posterior_nodes(post, w_T, c, S), [T], (k,),
                                          num_t=512, num_rho=48)[0, 0])
    assert abs(got / ref - 1) < 1e-6, (got, ref)
    old = float(gs.softmax_error_averaged(
        gs.posterior_nodes(post, w_T, c, S, num=24, rule="hermite"), [T], (k,),
        num_t=512, num_rho=48)[0, 0])
    assert abs(old / ref - 1) > 1e-3, (old, ref)   # the failure mode guarded against
    with pytest.raises(ValueError, match="rule"):
        gs.posterior_nodes(post, w_T, c, S, rule="simpson")
