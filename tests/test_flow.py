"""Tests of gapjax.flow: closed forms, solvers, likelihood, FT-FM / ResFT-FM."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import integrate

import gapjax.flow as F
from gapjax.data import gaussian_mixture
from gapjax.parallel import make_mesh, shard_batch, replicate
from gapjax.train import init_train_state, make_train_step, train_step_fn

MU, S = 2.0, 0.1


def gfield(mu=MU, s=S):
    return lambda x, t: F.gaussian_optimal_field(x, t, mu, s)


# ----------------------------------------------------------------- closed forms

def test_gaussian_path_solves_optimal_field(x64):
    # d/dt psi_t(x0) = v*(psi_t(x0), t) along the exact trajectory: an identity,
    # so float64 round-off (1e-10) is the tolerance.
    x0 = jnp.linspace(-3, 3, 13)[:, None]
    for t in [0.0, 0.3, 0.9, 0.97, 1.0]:
        dpsi = jax.jvp(lambda tt: F.gaussian_path(x0, tt, MU, S), (t,), (1.0,))[1]
        np.testing.assert_allclose(dpsi, gfield()(F.gaussian_path(x0, t, MU, S), t),
                                   atol=1e-10)
    np.testing.assert_allclose(F.gaussian_path(x0, 1.0, MU, S), F.gaussian_flow_map(x0, MU, S))


def test_reference_solve_gives_exact_flow_map(x64):
    # adaptive Dopri5 at rtol=atol=1e-9 on the stiff (L_u ~ 5) field: 1e-6 is ample.
    x0 = jnp.linspace(-3, 3, 31)[:, None]
    x1 = F.odeint_reference(gfield(), x0, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(x1, MU + S * x0, atol=1e-6)
    back = F.inverse_map(gfield(), x1, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(back, x0, atol=1e-6)


def test_minimal_cfm_loss_is_pi_over_two_s(x64, getkey):
    # exact integral (quadrature, 1e-9) ...
    val, _ = integrate.quad(lambda t: S**2 / ((1 - t) ** 2 + t**2 * S**2), 0, 1,
                            points=[1 - S], epsabs=1e-12)
    assert abs(val - F.gaussian_min_cfm_loss(S)) < 1e-9
    assert abs(F.gaussian_min_cfm_loss(S) - 0.15708) < 1e-5
    # ... and Monte Carlo of the CFM objective at the exact field. Stratified t
    # (2000 midpoints x 256 points); the standard error is ~0.3% of 0.157, so a
    # 2% tolerance is > 6 standard errors.
    nt, nx = 2000, 256
    t = jnp.repeat((jnp.arange(nt) + 0.5) / nt, nx)
    x0 = jax.random.normal(getkey(), (nt * nx, 1))
    x1 = MU + S * jax.random.normal(getkey(), (nt * nx, 1))
    loss = F.cfm_objective(lambda x, tt: F.gaussian_optimal_field(x, tt, MU, S), x0, x1, t)
    assert abs(float(loss) / (0.5 * math.pi * S) - 1) < 0.02


@pytest.mark.parametrize("n,expected", [(1, 0.300), (2, 0.270), (4, 0.216), (8, 0.139),
                                        (32, 0.039)])
def test_euler_error_of_exact_field_matches_spec(x64, n, expected):
    # spec numbers are rounded to 3 decimals: tolerance half a unit of the last place
    # plus round-off.
    x0 = jnp.linspace(-3, 3, 601)[:, None]
    err = jnp.max(jnp.abs(F.odeint(gfield(), x0, n) - F.gaussian_flow_map(x0, MU, S)))
    assert abs(float(err) - expected) <= 0.0005 + 1e-9


def test_stiffness_lipschitz_is_one_over_two_s(x64):
    # spec: max |dv*/dx| ~ 1/(2s) near t ~ 1 - s. The exact max is 1/(2s) + O(s)
    # (e.g. 5.05 for s=0.1), so 5% relative tolerance for s <= 0.1.
    for s in [0.1, 0.05, 0.02]:
        lip = F.gaussian_field_lipschitz(s)
        assert abs(lip * 2 * s - 1) < 0.05
        t = np.linspace(0, 1, 200001)
        t_star = t[np.argmax(np.abs(F.gaussian_field_slope(t, s)))]
        assert abs(t_star - (1 - s)) < 0.2 * s
    # the Jacobian-norm diagnostic recovers |a(t)| of the 3-D isotropic field
    x = jax.random.normal(jax.random.key(0), (4, 3), jnp.float64)
    for t in [0.2, 0.9]:
        np.testing.assert_allclose(F.jacobian_norms(gfield(), x, t),
                                   abs(F.gaussian_field_slope(t, S)), rtol=1e-10)
    ts, norms = F.trajectory_jacobian_norms(gfield(), x, 8)
    assert norms.shape == (8, 4)
    np.testing.assert_allclose(norms[:, 0], np.abs(F.gaussian_field_slope(np.asarray(ts), S)),
                               rtol=1e-10)


def test_gmm_field_satisfies_continuity_equation(x64, getkey):
    # d_t log p_t + div v + v . grad log p_t = 0 pointwise (exact identity; tol 1e-8).
    mix = gaussian_mixture(jnp.array([[2.0, 0.0], [-1.0, 1.5], [0.0, -2.0]]),
                           jnp.array([0.3, 0.5, 0.2]), jnp.array([0.5, 0.3, 0.2]))
    mix = jax.tree.map(lambda a: a.astype(jnp.float64), mix)
    x = 1.5 * jax.random.normal(getkey(), (16, 2), jnp.float64)
    field = lambda xx, tt: F.gmm_optimal_field(xx, tt, mix)

    @jax.jit
    def residual(t):
        dt_logp = jax.jvp(lambda tt: F.gmm_log_prob_t(x, tt, mix), (t,), (1.0,))[1]
        grad_logp = jax.grad(lambda xx: jnp.sum(F.gmm_log_prob_t(xx, t, mix)))(x)
        div = F.divergence(field, x, t)
        return dt_logp + div + jnp.sum(field(x, t) * grad_logp, -1)

    for t in [0.1, 0.5, 0.8, 0.95]:
        np.testing.assert_allclose(residual(jnp.float64(t)), 0.0, atol=1e-8)
    # a single component reduces to the Gaussian field
    one = gaussian_mixture(jnp.array([[MU, MU]]), S)
    one = jax.tree.map(lambda a: a.astype(jnp.float64), one)
    np.testing.assert_allclose(F.gmm_optimal_field(x, 0.7, one), gfield()(x, 0.7), atol=1e-12)


def test_solver_orders(x64):
    # Global error ~ N^-p for Euler (1), midpoint (2), RK4 (4) on the nonlinear
    # Gaussian-mixture field; reference: RK4 with 4096 steps (error < 1e-12).
    # Regress log error on log N over N = 16..128; +-0.3 covers pre-asymptotic
    # curvature.
    mix = gaussian_mixture(jnp.array([[1.0, 0.0], [-1.0, 0.5]]), jnp.array([0.6, 0.8]))
    mix = jax.tree.map(lambda a: a.astype(jnp.float64), mix)
    field = lambda x, t: F.gmm_optimal_field(x, t, mix)
    x0 = jax.random.normal(jax.random.key(3), (9, 2), jnp.float64)
    exact = F.odeint(field, x0, 4096, method="rk4")
    ns = np.array([16, 32, 64, 128])
    for method, order in [("euler", 1), ("midpoint", 2), ("rk4", 4)]:
        errs = [float(jnp.max(jnp.abs(F.odeint(field, x0, int(n), method=method) - exact)))
                for n in ns]
        slope = np.polyfit(np.log(ns), np.log(errs), 1)[0]
        assert abs(-slope - order) < 0.3, (method, slope)


def test_logprob_matches_gaussian_density(x64, getkey):
    # Exact divergence + adaptive solve at rtol=1e-9: 1e-5. Fixed-step RK4 with 100
    # steps: 1e-4. Hutchinson is exact for the isotropic field (eps^T a I eps = a D
    # for Rademacher eps), so only solver error remains: 1e-5.
    x1 = MU + S * jax.random.normal(getkey(), (6, 3), jnp.float64)
    true = jnp.sum(jax.scipy.stats.norm.logpdf(x1, MU, S), -1)
    np.testing.assert_allclose(F.logprob(gfield(), x1, rtol=1e-9, atol=1e-9), true, atol=1e-5)
    np.testing.assert_allclose(F.logprob(gfield(), x1, n_steps=100), true, atol=1e-4)
    np.testing.assert_allclose(F.logprob(gfield(), x1, estimator="hutchinson", key=getkey(),
                                         num_probes=2, rtol=1e-9, atol=1e-9), true, atol=1e-5)


def test_hutchinson_unbiased_for_non_isotropic_field(x64, getkey):
    # a non-isotropic linear field v = A x: tr(A) exactly vs the mean of 4000
    # probes; Rademacher variance is 2 sum_{i!=j} A_ij^2 -> 5 standard errors.
    a = jax.random.normal(getkey(), (5, 5), jnp.float64)
    field = lambda x, t: x @ a.T
    x = jax.random.normal(getkey(), (3, 5), jnp.float64)
    np.testing.assert_allclose(F.divergence(field, x, 0.0), jnp.trace(a) * jnp.ones(3), atol=1e-12)
    probes = jax.random.rademacher(getkey(), (4000, 3, 5), jnp.float64)
    est = F.divergence(field, x, 0.0, probes=probes)
    off = a - jnp.diag(jnp.diag(a))
    se = math.sqrt(float(jnp.sum(off**2 + off * off.T)) / 4000)
    np.testing.assert_allclose(est, jnp.trace(a) * jnp.ones(3), atol=5 * se)


# --------------------------------------------------------------- Theorem 1

def test_theorem1_bound_holds_on_closed_form(x64):
    # LHS: max over x0 in [-3, 3] of the Euler error of v_theta = v* + eps sin(x);
    # RHS: the bound with delta = eps (= sup|v_theta - v*|), exact L_u and M.
    lip = F.gaussian_field_lipschitz(S)
    m = F.gaussian_path_acceleration_max(S, 3.0)
    x0 = jnp.linspace(-3, 3, 601)[:, None]
    for eps in [0.0, 0.05]:
        field = lambda x, t: gfield()(x, t) + eps * jnp.sin(x)
        for n in [1, 2, 4, 8, 32]:
            lhs = float(jnp.max(jnp.abs(F.odeint(field, x0, n) - (MU + S * x0))))
            rhs = float(F.theorem1_bound(eps, lip, m, jnp.full((n,), 1.0 / n)))
            assert lhs <= rhs, (eps, n, lhs, rhs)
    # the bound's value for N = 1 is the local term only (t_0 = 0)
    assert float(F.theorem1_bound(0.1, 5.0, 2.0, jnp.ones(1))) == pytest.approx(0.1 + 1.0)


# ------------------------------------------------------ gradients and couplings

def _tiny_mlp(getkey, dim=2, **kw):
    net = F.VelocityMLP(features=(16, 16), time_dim=8, **kw)
    x = jnp.zeros((2, dim))
    c = kw.get("num_classes") and jnp.zeros((2,), jnp.int32)
    params = net.init(getkey(), x, 0.0, c if c is not None else None)["params"]
    return net, params


@pytest.mark.parametrize("method,checkpoint", [("euler", False), ("rk4", True),
                                               ("midpoint", False)])
def test_ftfm_gradient_matches_finite_differences(x64, getkey, method, checkpoint):
    # central differences in float64 along a random direction, h=1e-5: truncation
    # O(h^2 |f'''|) and round-off O(1e-16/h) are both < 1e-8 relative.
    net, params = _tiny_mlp(getkey)
    params = jax.tree.map(lambda p: p.astype(jnp.float64) + 0.1, params)
    p = F.init_recon_params(params, learn_sigma=True, log_sigma=-0.5)
    batch = {"x0": jax.random.normal(getkey(), (8, 2), jnp.float64),
             "x1": jax.random.normal(getkey(), (8, 2), jnp.float64)}
    loss_fn = F.ftfm_loss(net.apply, n_steps=4, method=method, sigma="learned",
                          fm_weight=0.5, checkpoint=checkpoint)
    key = getkey()
    f = jax.jit(lambda q: loss_fn(q, {}, batch, key)[0])
    g = jax.grad(f)(p)
    d = jax.tree.map(lambda a: jax.random.normal(jax.random.key(a.size), a.shape, a.dtype), p)
    h = 1e-5
    fd = (f(jax.tree.map(lambda a, b: a + h * b, p, d))
          - f(jax.tree.map(lambda a, b: a - h * b, p, d))) / (2 * h)
    ad = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(d)))
    np.testing.assert_allclose(float(ad), float(fd), rtol=1e-6)
    # checkpointing changes memory, never values
    other = F.ftfm_loss(net.apply, n_steps=4, method=method, sigma="learned",
                        fm_weight=0.5, checkpoint=not checkpoint)
    g2 = jax.grad(lambda q: other(q, {}, batch, key)[0])(p)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_gaussian_recon_nll_is_gaussian_log_density(x64, getkey):
    x1 = jax.random.normal(getkey(), (5, 3), jnp.float64)
    xh = jax.random.normal(getkey(), (5, 3), jnp.float64)
    ls = jnp.array([-0.3, 0.1, 0.4])
    ref = -np.sum(jax.scipy.stats.norm.logpdf(x1, xh, jnp.exp(ls)[None]), -1)
    np.testing.assert_allclose(F.gaussian_recon_nll(x1, xh, ls), ref, rtol=1e-12)


def test_exact_ot_is_optimal_and_sinkhorn_reduces_cost(getkey):
    # n = 6: brute force over all 720 permutations.
    x0 = jax.random.normal(getkey(), (6, 2))
    x1 = jax.random.normal(getkey(), (6, 2)) + 1.0
    paired = F.ot_pair(getkey(), x0, x1, method="exact_ot")
    cost = float(jnp.sum((paired - x1) ** 2))
    best = min(float(jnp.sum((x0[np.array(p)] - x1) ** 2)) for p in itertools.permutations(range(6)))
    assert cost == pytest.approx(best, rel=1e-6)
    # Sinkhorn plan: uniform marginals (100 iterations, eps=0.05: 1e-3 of 1/B)
    a = jax.random.normal(getkey(), (64, 2))
    b = jax.random.normal(getkey(), (64, 2)) * 0.3 + 2.0
    plan = F.sinkhorn_plan(a, b)
    np.testing.assert_allclose(jnp.sum(plan, 0), 1 / 64, rtol=1e-3)
    # the entropic plan closes most of the gap between the independent and the
    # exact OT transport cost; pairs sampled from it are cheaper than independent
    cost = lambda p: float(jnp.mean(jnp.sum((p - b) ** 2, -1)))
    c_ind, c_ot = cost(a), cost(F.ot_pair(getkey(), a, b, method="exact_ot"))
    c_plan = float(jnp.sum(plan * jnp.sum((a[:, None] - b[None]) ** 2, -1)))
    assert c_plan - c_ot < 0.5 * (c_ind - c_ot)
    assert cost(F.ot_pair(getkey(), a, b)) < c_ind


# ----------------------------------------------------------- contraction

def _perturbed_residual(getkey, rate, norm="holder", dim=3):
    res = F.ContractingResidual(rate=rate, features=(16, 16), time_dim=8, norm=norm)
    params = res.init(getkey(), jnp.zeros((2, dim)), 0.0)["params"]
    # move away from the identity initialisation so h is a generic network
    params = jax.tree.map(lambda p: p + 0.7 * jax.random.normal(jax.random.key(p.size), p.shape),
                          params)
    return res, params


@pytest.mark.parametrize("norm", ["holder", "svd"])
def test_contraction_certificate_holds(getkey, norm):
    # guaranteed: lambda_max(sym J_r) <= -rate for every input; float32 round-off
    # in the normalisation and eigvalsh: 1e-4.
    rate = 0.3
    res, params = _perturbed_residual(getkey, rate, norm)
    x = 3 * jax.random.normal(getkey(), (256, 3))
    t = jax.random.uniform(getkey(), (256,))
    lam = F.certify_contraction(F.make_field(res.apply, params), x, t)
    assert float(lam) <= -rate + 1e-4
    # the bound is not vacuous: the residual is far from -rate * I somewhere
    assert float(lam) > -rate - 10.0


def test_certificate_holds_after_resft_training(getkey):
    rate = 0.2
    net, pre = _tiny_mlp(getkey)
    res = F.ContractingResidual(rate=rate, features=(16, 16), time_dim=8)
    rp = F.init_recon_params(res.init(getkey(), jnp.zeros((2, 2)), 0.0)["params"])
    loss_fn = F.resft_loss(net.apply, pre, res.apply, n_steps=2, sigma=0.5)
    tx = optax.adam(3e-2)
    state = init_train_state(getkey(), lambda k: {"params": rp}, tx)
    step = make_train_step(loss_fn, tx, donate=False)
    z = jax.random.normal(getkey(), (64, 2))
    batch = {"x0": z, "x1": jnp.tanh(3 * z) * 2.0}
    for _ in range(40):
        state, m = step(state, batch)
    moved = sum(float(jnp.sum((a - b) ** 2)) for a, b in
                zip(jax.tree.leaves(state.params), jax.tree.leaves(rp)))
    assert moved > 0.1  # training changed the residual substantially
    lam = F.certify_contraction(F.make_field(res.apply, state.params["field"]),
                                3 * jax.random.normal(getkey(), (256, 2)),
                                jax.random.uniform(getkey(), (256,)))
    assert float(lam) <= -rate + 1e-4


def test_trajectories_approach_at_certified_rate(x64, getkey):
    # v = v_pre + r with v_pre the Gaussian field (sym J = a(t) I exactly) and r
    # contracting at rate c: ||x(t) - y(t)|| <= exp(int_0^t (a - c)) ||x0 - y0||.
    # RK4 with 400 steps: discretisation error < 1e-8 relative, tolerance 1e-6.
    c = 0.5
    res, params = _perturbed_residual(getkey, c, dim=2)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
    v_pre = lambda x, t: F.gaussian_optimal_field(x, t, 1.0, 0.5)
    field = lambda x, t: v_pre(x, t) + res.apply({"params": params}, x, t)
    xa = jax.random.normal(getkey(), (16, 2), jnp.float64)
    xb = xa + 0.5 * jax.random.normal(getkey(), (16, 2), jnp.float64)
    ts, dist = F.pair_distances(field, xa, xb, 400, method="rk4")
    int_a = np.array([integrate.quad(lambda s: F.gaussian_field_slope(s, 0.5), 0, float(t))[0]
                      for t in ts])
    bound = np.exp(int_a - c * np.asarray(ts))[:, None] * np.asarray(dist[0])[None]
    assert np.all(np.asarray(dist) <= bound * (1 + 1e-6))
    # without the residual the pre-trained pair only obeys the weaker exp(int a)
    _, d_pre = F.pair_distances(v_pre, xa, xb, 400, method="rk4")
    assert np.all(np.asarray(dist[-1]) < np.asarray(d_pre[-1]))


def test_linear_part_keeps_certificate_and_lmi(getkey, x64):
    # A = -L L^T + (K - K^T) has sym(A) = -L L^T <= 0, so adding it keeps
    # sym(J_r) <= -rate (float round-off 1e-8 in float64).
    rate = 0.3
    res = F.ContractingResidual(rate=rate, features=(16, 16), time_dim=8, linear=True)
    params = res.init(getkey(), jnp.zeros((2, 3)), 0.0)["params"]
    params = jax.tree.map(lambda p: p + 0.7 * jax.random.normal(jax.random.key(p.size), p.shape),
                          params)
    x = 3 * jax.random.normal(getkey(), (256, 3))
    t = jax.random.uniform(getkey(), (256,))
    lam = F.certify_contraction(F.make_field(res.apply, params), x, t)
    assert -rate - 20 < float(lam) <= -rate + 1e-8
    a = F.residual_linear_matrix(params)
    assert float(jnp.max(jnp.abs(a - a.T))) > 0.1  # a genuine rotation part
    assert float(F.lmi_certificate(a, 0.0)) <= 1e-10
    # the LMI value against an independent float64 NumPy computation, general metric
    rng = np.random.default_rng(0)
    q = rng.normal(size=(3, 3))
    p_np = q @ q.T + 0.5 * np.eye(3)
    a_np = np.asarray(a)
    ref = np.linalg.eigvalsh(a_np.T @ p_np + p_np @ a_np + 2 * 0.1 * p_np)[-1]
    np.testing.assert_allclose(float(F.lmi_certificate(a, 0.1, jnp.asarray(p_np))), ref,
                               rtol=1e-10)
    # a matrix with an expanding direction fails the LMI
    assert float(F.lmi_certificate(jnp.diag(jnp.array([0.2, -1.0, -1.0])), 0.0)) > 0


def test_lmi_and_linear_part_errors():
    with pytest.raises(ValueError, match="square"):
        F.lmi_certificate(jnp.ones((2, 3)), 0.1)
    with pytest.raises(ValueError, match="positive definite"):
        F.lmi_certificate(-jnp.eye(2), 0.1, metric=-jnp.eye(2))
    with pytest.raises(ValueError, match="linear=True"):
        F.residual_linear_matrix({"w0": jnp.eye(2)})


@pytest.mark.parametrize("n", [2, 4, 8])
def test_euler_overcontracts_and_contracting_residual_cannot_help(x64, n):
    # Why ResFT-FM's contracting residual cannot lower the few-step error of the
    # exact field of N(mu, s^2): the field is affine with slope a(t) < 0 and an
    # Euler step scales the spread by 1 + tau a < exp(tau a), so the N-step map
    # x_N = f x0 + g has f < s (over-contraction). A residual -k_j (x - m_j) with
    # k_j >= c > 0 on step j (contracting) multiplies f by prod_j (1 - tau k_j /
    # (1 + tau a_j)) < 1 as long as every step factor stays >= 0, so |f' - s| >
    # |f - s| for any such residual: checked on 50 random residuals.
    mu, s, c = 2.0, 0.1, 0.05
    tau = 1.0 / n
    a = np.array([F.gaussian_field_slope(j * tau, s) for j in range(n)])
    f = np.prod(1 + tau * a)
    assert 0 < f < s
    x0 = jnp.array([[-1.0], [1.0]])
    exact = lambda x, t: F.gaussian_optimal_field(x, t, mu, s)
    slope = lambda field: float((F.odeint(field, x0, n)[1, 0] - F.odeint(field, x0, n)[0, 0]) / 2)
    np.testing.assert_allclose(slope(exact), f, rtol=1e-10)
    rng = np.random.default_rng(n)
    for _ in range(50):
        kmax = (1 + tau * a) / tau           # step factor 1 + tau (a - k) >= 0
        k = rng.uniform(c, np.maximum(kmax, c))
        m = rng.normal(size=n)
        kj, mj = jnp.asarray(k), jnp.asarray(m)

        def field(x, t, kj=kj, mj=mj):
            j = jnp.clip(jnp.floor(t * n + 1e-9).astype(int), 0, n - 1)
            return exact(x, t) - kj[j] * (x - mj[j])

        assert abs(slope(field) - s) > abs(f - s)


def test_perturbation_deviation_linear_field(x64):
    # v = -k x: Euler multiplies a perturbation by (1 - k/N) per remaining step.
    k, n = 1.5, 4
    field = lambda x, t: -k * x
    x0 = jnp.ones((3, 2))
    pert = 0.1 * jnp.ones((3, 2))
    dev = F.perturbation_deviation(field, x0, pert, n, 2)
    np.testing.assert_allclose(dev, math.sqrt(2) * 0.1 * (1 - k / n) ** 2, rtol=1e-12)


# ------------------------------------------------------------ pairing / errors

def test_independent_pairing_refused(getkey):
    x1 = jax.random.normal(getkey(), (8, 2))
    with pytest.raises(ValueError, match="independent.*mean"):
        F.make_pairs(x1, pairing="independent")
    with pytest.raises(ValueError, match="pairing must be one of"):
        F.make_pairs(x1, pairing="random")
    with pytest.raises(ValueError, match="x0"):
        F.make_pairs(x1, pairing="data")


def test_inverse_ode_pairing_reconstructs(x64, getkey):
    # the pairs are exact inverses: the reference forward map recovers x1 (1e-5).
    net, params = _tiny_mlp(getkey)
    params = jax.tree.map(lambda p: p.astype(jnp.float64) + 0.05, params)
    x1 = jax.random.normal(getkey(), (10, 2), jnp.float64)
    pairs = F.make_pairs(x1, pairing="inverse_ode", apply_fn=net.apply, params=params,
                         chunk_size=4, rtol=1e-9, atol=1e-9)
    fwd = F.forward_map(F.make_field(net.apply, params), pairs["x0"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fwd, x1, atol=1e-5)


def test_bad_inputs_raise(getkey):
    f = gfield()
    with pytest.raises(TypeError, match="x0 must be a floating"):
        F.odeint(f, jnp.ones((3, 2), jnp.int32), 2)
    with pytest.raises(ValueError, match="n_steps"):
        F.odeint(f, jnp.ones((3, 2)), 0)
    with pytest.raises(ValueError, match="method"):
        F.odeint(f, jnp.ones((3, 2)), 2, method="heun3")
    with pytest.raises(ValueError, match="NaN"):
        F.odeint(f, jnp.full((3, 2), jnp.nan), 2)
    with pytest.raises(ValueError, match="estimator"):
        F.logprob(f, jnp.ones((3, 2)), estimator="skilling")
    with pytest.raises(ValueError, match="key"):
        F.logprob(f, jnp.ones((3, 2)), estimator="hutchinson")
    net, params = _tiny_mlp(getkey)
    with pytest.raises(ValueError, match=r"x must be \(B, D\)"):
        net.apply({"params": params}, jnp.ones((3, 2, 2)), 0.0)
    with pytest.raises(ValueError, match="t must be"):
        net.apply({"params": params}, jnp.ones((3, 2)), jnp.ones((4,)))
    cnet, cparams = _tiny_mlp(getkey, num_classes=3)
    with pytest.raises(ValueError, match="pass c"):
        cnet.apply({"params": cparams}, jnp.ones((3, 2)), 0.0)
    with pytest.raises(ValueError, match="class labels"):
        cnet.apply({"params": cparams}, jnp.ones((3, 2)), 0.0, jnp.ones((3,)))
    with pytest.raises(ValueError, match="images"):
        F.VelocityConv().init(getkey(), jnp.ones((2, 7, 7)), 0.0)
    loss_fn = F.ftfm_loss(net.apply, n_steps=2)
    with pytest.raises(ValueError, match="paired 'x0'"):
        loss_fn(F.init_recon_params(params), {}, {"x1": jnp.ones((3, 2))}, getkey())
    with pytest.raises(ValueError, match="sigma"):
        F.ftfm_loss(net.apply, n_steps=2, sigma=-1.0)
    with pytest.raises(ValueError, match="n_steps"):
        F.ftfm_loss(net.apply, n_steps=2.5)
    with pytest.raises(ValueError, match="coupling"):
        F.cfm_loss(net.apply, coupling="hungarian")
    with pytest.raises(ValueError, match="delta"):
        F.theorem1_bound(-1.0, 1.0, 1.0, jnp.ones(2) / 2)
    with pytest.raises(ValueError, match="s must be > 0"):
        F.gaussian_min_cfm_loss(0.0)
    with pytest.raises(ValueError, match="rate"):
        F.ContractingResidual(rate=0.0).init(getkey(), jnp.ones((2, 2)), 0.0)


# ------------------------------------------------ vmap, seeds, sharding, nets

def test_odeint_vmaps_over_batches(getkey):
    # vmapping over a leading axis of batches equals solving them one by one
    # (float32 arithmetic, identical ops: 1e-6).
    net, params = _tiny_mlp(getkey)
    field = F.make_field(net.apply, params)
    xs = jax.random.normal(getkey(), (3, 5, 2))
    out = jax.vmap(lambda x: F.odeint(field, x, 4, method="midpoint"))(xs)
    for i in range(3):
        np.testing.assert_allclose(out[i], F.odeint(field, xs[i], 4, method="midpoint"),
                                   atol=1e-6)


def test_cfm_training_vmaps_over_seeds(getkey):
    net = F.VelocityMLP(features=(16, 16), time_dim=8)
    tx = optax.adam(1e-3)
    init = lambda k: init_train_state(k, lambda kk: net.init(kk, jnp.zeros((2, 2)), 0.0), tx)
    keys = jax.random.split(getkey(), 2)
    states = jax.vmap(init)(keys)
    step = make_train_step(F.cfm_loss(net.apply, coupling="sinkhorn"), tx, num_seeds=2)
    batch = {"x1": jax.random.normal(getkey(), (32, 2))}
    new, m = step(states, batch)
    assert m["loss"].shape == (2,)
    single = jax.jit(train_step_fn(F.cfm_loss(net.apply, coupling="sinkhorn"), tx))
    for i in range(2):
        _, mi = single(init(keys[i]), batch)
        np.testing.assert_allclose(m["loss"][i], mi["loss"], rtol=1e-5)


def test_ftfm_step_sharded_on_8_devices_matches_single(getkey):
    # the same jitted step on a (data=8) mesh and on one device: identical math,
    # different reduction order -> 1e-5 relative.
    assert jax.device_count() >= 8
    net, params = _tiny_mlp(getkey, num_classes=4)
    p = F.init_recon_params(params, learn_sigma=True)
    loss_fn = F.ftfm_loss(net.apply, n_steps=3, sigma="learned", fm_weight=0.1,
                          conditional=True)
    tx = optax.adam(1e-3)
    batch = {"x0": jax.random.normal(getkey(), (64, 2)),
             "x1": jax.random.normal(getkey(), (64, 2)),
             "c": jax.random.randint(getkey(), (64,), 0, 4)}
    k = getkey()
    s1, m1 = make_train_step(loss_fn, tx, donate=False)(
        init_train_state(k, lambda _: {"params": p}, tx), batch)
    mesh = make_mesh(8)
    state = replicate(init_train_state(k, lambda _: {"params": p}, tx), mesh)
    s8, m8 = make_train_step(loss_fn, tx, mesh=mesh)(state, shard_batch(batch, mesh))
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s8.params), jax.tree.leaves(s1.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_conv_ftfm_on_digit_images_lowers_reconstruction_error(getkey):
    # The digits path with VelocityConv: class-conditional (B, 8, 8) images paired
    # with noise through 2 unrolled Euler steps; 40 Adam steps must lower the
    # reconstruction NLL (a regression on a fixed batch, so it has to fall).
    from gapjax.data import load_digits

    train, _ = load_digits()
    x1, c = jnp.asarray(train.x[:32]), jnp.asarray(train.y[:32])
    net = F.VelocityConv(channels=8, num_blocks=1, time_dim=8, num_classes=10)
    params = F.init_recon_params(net.init(getkey(), x1[:2], 0.0, c[:2])["params"])
    loss_fn = F.ftfm_loss(net.apply, n_steps=2, conditional=True)
    tx = optax.adam(3e-3)
    state = init_train_state(getkey(), lambda k: {"params": params}, tx)
    step = make_train_step(loss_fn, tx, donate=False)
    batch = {"x0": jax.random.normal(getkey(), x1.shape), "x1": x1, "c": c}
    state, m0 = step(state, batch)
    for _ in range(40):
        state, m = step(state, batch)
    assert float(m["recon_mse"]) < 0.8 * float(m0["recon_mse"])


def test_networks_shapes(getkey):
    conv = F.VelocityConv(channels=8, num_blocks=1, num_classes=10)
    x = jnp.ones((4, 8, 8))
    c = jnp.arange(4)
    v = jax.jit(lambda k: conv.apply(conv.init(k, x, 0.0, c), x, jnp.linspace(0, 1, 4), c))(
        getkey())
    assert v.shape == x.shape and v.dtype == jnp.float32
    pol = F.VelocityMLP(features=(16,), time_dim=8)
    s = jnp.ones((4, 2))
    assert pol.apply(pol.init(getkey(), s, 0.0, s), s, 0.5, s).shape == (4, 2)
    res = F.ContractingResidual(rate=0.1, features=(8,), num_classes=10)
    assert res.apply(res.init(getkey(), x, 0.0, c), x, 0.3, c).shape == x.shape


# ------------------------------------------------------------ metrics, task

def test_metrics(getkey):
    a = jax.random.normal(getkey(), (400, 2))
    b = jax.random.normal(getkey(), (400, 2))
    # unbiased MMD of equal laws is ~0 (std ~ 1/n); a shift of 2 is far away
    assert abs(float(F.mmd_rbf(a, b))) < 0.02
    assert float(F.mmd_rbf(a, b + 2.0)) > 0.3
    assert float(F.sliced_wasserstein(getkey(), a, b + 1.0)) > 0.5
    # Frechet distance: zero to itself, squared mean shift for a translate
    f = np.asarray(a)
    assert F.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-8)
    assert F.frechet_distance(f, f + np.array([3.0, 4.0])) == pytest.approx(25.0, rel=1e-8)


def test_expert_policy_solves_two_goal_task(getkey):
    task = F.TwoGoalTask()
    s, a = F.demonstrations(getkey(), task, 50)
    assert s.shape == (50 * task.horizon, 2) and a.shape == s.shape

    def expert(key, states):
        side = jnp.where(jax.random.bernoulli(key, 0.5, states.shape[:1]), 1.0, -1.0)
        side = jnp.where(jnp.abs(states[:, 0]) > 0.05, jnp.sign(states[:, 0]), side)
        return jax.vmap(lambda st, sd: F.expert_action(task, st, sd))(states, side)

    ok, path = F.rollout(getkey(), task, expert, 64)
    assert path.shape == (64, task.horizon + 1, 2)
    assert float(jnp.mean(ok)) == 1.0
    # the mean of the two modes goes straight up into the obstacle
    mean_pol = lambda key, st: jnp.broadcast_to(jnp.array([0.0, 1.0]), st.shape)
    ok_mean, _ = F.rollout(getkey(), task, mean_pol, 64)
    assert float(jnp.mean(ok_mean)) == 0.0


def test_flow_experiment_refuses_perturbation_outside_window_before_training(tmp_path):
    # claim 2 perturbs inside the contraction window; a setting that puts t_p
    # before t_c must fail at once, not after minutes of training
    from gapjax.configs.flow import get_config
    from gapjax.experiments import flow as flow_exp

    cfg = get_config("quick")
    cfg.toy.perturb_at = 1
    with pytest.raises(ValueError, match="perturb_at.*window"):
        flow_exp._execute(cfg, tmp_path)


# ------------------------------------------- late-window ResFT-FM (issue 12)

def _gauss_pre(mu, s):
    """A linen-style ``apply`` of the exact Gaussian field (sym J = a(t) I)."""
    return lambda variables, x, t, c=None: F.gaussian_optimal_field(x, t, mu, s)


def _late(getkey, *, beta=0.0, rate=0.3, t_c=0.5, dim=2, dtype=jnp.float64):
    res = F.LateContractingResidual(rate=rate, t_c=t_c, beta=beta, features=(16, 16),
                                    time_dim=8, scale=2.0, free_init=1.0)
    x = jnp.zeros((2, dim), dtype)
    params = res.init(getkey(), x, 0.6, v_pre=x, lambda_pre=jnp.zeros(3, dtype))["params"]
    # a generic network, away from the identity initialisation
    params = jax.tree.map(lambda p: (p + 0.5 * jax.random.normal(
        jax.random.key(p.size), p.shape)).astype(dtype), params)
    return res, params


def _exact_table(s, t_c, k=33):
    ts = jnp.linspace(t_c, 1.0, k)
    return ts, jnp.asarray([F.gaussian_field_slope(float(t), s) for t in ts])


def test_late_residual_certificate_holds_after_training_and_fails_below_lambda_pre(x64, getkey):
    # v_pre = exact field of N(mu, s^2): sym J = a(t) I everywhere, so
    # estimate_lambda_pre recovers a(t_k) and, a(t) having a single minimum,
    # the envelope max(a(t_j), a(t_j+1)) bounds a(t) on every grid interval: the
    # combined field must satisfy sym J <= -rate exactly (float64 round-off 1e-8).
    mu, s, rate, t_c = 1.0, 0.3, 0.3, 0.5
    pre_apply = _gauss_pre(mu, s)
    ts, exact = _exact_table(s, t_c)
    xs = jax.random.normal(getkey(), (ts.shape[0], 32, 2), jnp.float64)
    lam = F.estimate_lambda_pre(F.make_field(pre_apply, {}), xs, ts)
    np.testing.assert_allclose(lam, exact, atol=1e-10)
    res, p0 = _late(getkey, rate=rate, t_c=t_c)
    loss_fn = F.late_resft_loss(pre_apply, {}, res.apply, n_steps=4, lambda_pre=lam)
    tx = optax.adam(3e-2)
    state = init_train_state(getkey(), lambda k: {"params": F.init_recon_params(p0)}, tx)
    step = make_train_step(loss_fn, tx, donate=False)
    z = jax.random.normal(getkey(), (64, 2), jnp.float64)
    batch = {"x0": z, "x1": jnp.tanh(2 * z) * 1.5}
    losses = []
    for _ in range(30):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert losses[-1] < losses[0] - 0.1  # it trained
    params = state.params["field"]
    field = F.late_residual_field(pre_apply, {}, res.apply, params, None, lam)
    _, path = F.odeint(field, z, 4, return_path=True)
    for k, t in ((2, 0.5), (3, 0.75)):  # the sampler's states inside the window
        far = 3 * jax.random.normal(getkey(), (64, 2), jnp.float64)
        x = jnp.concatenate([path[k - 1], far], 0)
        t_rand = jax.random.uniform(getkey(), (128,), jnp.float64, t_c, 1.0)
        assert float(F.certify_contraction(field, x, t)) <= -rate + 1e-8
        assert float(F.certify_contraction(field, x, t_rand)) <= -rate + 1e-8
    # the same residual with a gain below lambda_pre: lowering the table by
    # delta = rate + a + Lip(g) + 0.2 at t = 0.75 gives kappa = env - Lip(g) - 0.2,
    # so lambda_max(sym J) >= a(t) - kappa - Lip(g) = a(t) - env + 0.2 > -rate
    x = jnp.concatenate([path[1], path[2]], 0)
    g = res.apply({"params": params}, x, 0.75, v_pre=x, lambda_pre=lam, return_gains=True)
    env = F.window_envelope(lam, jnp.full(x.shape[:1], 0.75), t_c, 1.0)
    delta = float(jnp.max(g["kappa"] + g["lip_g"] - env)) + 0.2
    low = F.late_residual_field(pre_apply, {}, res.apply, params, None, lam - delta)
    assert float(F.certify_contraction(low, x, 0.75)) > -rate


def test_late_residual_beta_one_needs_no_bound(getkey):
    # beta = 1 removes v_pre on the window: even a strongly expanding v_pre (5 x)
    # gives a combined field with sym J <= -rate there (float32 round-off 1e-4),
    # while before t_c the combined field is left free (and expands here).
    rate = 0.5
    res, params = _late(getkey, beta=1.0, rate=rate, t_c=0.75, dtype=jnp.float32)
    pre_apply = lambda variables, x, t, c=None: 5.0 * x
    field = F.late_residual_field(pre_apply, {}, res.apply, params)
    x = 3 * jax.random.normal(getkey(), (256, 2))
    t_in = jax.random.uniform(getkey(), (256,), minval=0.75, maxval=1.0)
    assert float(F.certify_contraction(field, x, t_in)) <= -rate + 1e-4
    assert float(F.certify_contraction(field, x, 0.5)) > 0.0
    with pytest.raises(ValueError, match="lambda_pre"):
        _late(getkey, beta=0.5, dtype=jnp.float32)[0].apply({"params": params}, x, 0.8, v_pre=x)


def test_late_residual_gain_gating_in_t(x64, getkey):
    # Before t_c: kappa(t) = 0, r does not see v_pre, Lip(g) < free_lip. Inside
    # the window (beta = 1/2): kappa >= (1 - beta) lambda_pre(t) + rate,
    # Lip(g) < kappa - (1 - beta) lambda_pre(t) - rate and r = -beta v_pre + ...
    rate, t_c, s, beta = 0.3, 0.5, 0.3, 0.5
    res, params = _late(getkey, beta=beta, rate=rate, t_c=t_c)
    ts, lam = _exact_table(s, t_c)
    x = jax.random.normal(getkey(), (8, 2), jnp.float64)
    v1, v2 = jax.random.normal(getkey(), (2, 8, 2), jnp.float64)
    call = lambda t, v, **kw: res.apply({"params": params}, x, t, v_pre=v, lambda_pre=lam, **kw)
    for t in (0.0, 0.2, 0.4999):
        g = call(t, v1, return_gains=True)
        assert not bool(jnp.any(g["window"])) and float(jnp.max(jnp.abs(g["kappa"]))) == 0.0
        assert 0 < float(jnp.min(g["lip_g"])) and float(jnp.max(g["lip_g"])) < res.free_lip
        np.testing.assert_array_equal(call(t, v1), call(t, v2))
    for t in (0.5, 0.61, 0.8, 1.0):
        g = call(t, v1, return_gains=True)
        env = F.window_envelope(lam, jnp.full((8,), t), t_c, 1.0)
        assert bool(jnp.all(g["window"]))
        assert float(jnp.min(env)) >= F.gaussian_field_slope(t, s) - 1e-12
        margin = g["kappa"] - (1 - beta) * env - rate
        assert float(jnp.min(margin)) > 0
        assert float(jnp.max(g["lip_g"] - margin)) < 0
        # the only v_pre dependence is -beta v_pre (float64 round-off 1e-12)
        np.testing.assert_allclose(call(t, v1) - call(t, v2), -beta * (v1 - v2), atol=1e-12)


def test_late_resft_gradient_matches_finite_differences(x64, getkey):
    # central differences along a random direction, h = 1e-5 (as for FT-FM):
    # truncation and round-off both < 1e-8 relative. N = 4 with t_c = 0.5 runs two
    # free and two window steps, so both branches of the gate are differentiated.
    net, pre = _tiny_mlp(getkey)
    pre = jax.tree.map(lambda p: p.astype(jnp.float64) + 0.1, pre)
    res, rp = _late(getkey)
    lam = jnp.linspace(1.0, 0.0, 5)
    p = F.init_recon_params(rp, learn_sigma=True, log_sigma=-0.3)
    batch = {"x0": jax.random.normal(getkey(), (8, 2), jnp.float64),
             "x1": jax.random.normal(getkey(), (8, 2), jnp.float64)}
    loss_fn = F.late_resft_loss(net.apply, pre, res.apply, n_steps=4, lambda_pre=lam,
                                sigma="learned")
    key = getkey()
    f = jax.jit(lambda q: loss_fn(q, {}, batch, key)[0])
    g = jax.grad(f)(p)
    d = jax.tree.map(lambda a: jax.random.normal(jax.random.key(a.size), a.shape, a.dtype), p)
    h = 1e-5
    fd = (f(jax.tree.map(lambda a, b: a + h * b, p, d))
          - f(jax.tree.map(lambda a, b: a - h * b, p, d))) / (2 * h)
    ad = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(d)))
    np.testing.assert_allclose(float(ad), float(fd), rtol=1e-6)
    # the frozen pre-trained field gets no gradient through the residual's v_pre input
    gp = jax.grad(lambda q: F.late_resft_loss(net.apply, q, res.apply, n_steps=4,
                                              lambda_pre=lam)(p, {}, batch, key)[0])(pre)
    assert all(float(jnp.max(jnp.abs(a))) == 0.0 for a in jax.tree.leaves(gp))


def test_window_perturbation_obeys_certificate_bound_on_gaussian(x64, getkey):
    # Claim 2's bound on the closed form: v_pre = exact field of N(mu, s^2) and the
    # late residual (beta = 0, exact lambda_pre table) make the combined field
    # contract at rate c on [t_c, 1] for every x, so two solutions started at
    # t_p in the window obey |x(t) - y(t)| <= exp(-c (t - t_p)) |delta|.
    # RK4 with 400 steps: discretisation error < 1e-8 relative; tolerance 1e-6.
    mu, s, c, t_c, t_p = 2.0, 0.2, 2.0, 0.5, 0.75
    pre_apply = _gauss_pre(mu, s)
    _, lam = _exact_table(s, t_c)
    res, params = _late(getkey, rate=c, t_c=t_c)
    field = F.late_residual_field(pre_apply, {}, res.apply, params, None, lam)
    z = jax.random.normal(getkey(), (32, 2), jnp.float64)
    xa = F.odeint(field, z, 3, t0=0.0, t1=t_p)            # Euler state after step 3 of 4
    delta = 0.3 * jax.random.normal(getkey(), (32, 2), jnp.float64)
    ts, dist = F.pair_distances(field, xa, xa + delta, 400, method="rk4", t0=t_p, t1=1.0)
    bound = np.exp(-c * (np.asarray(ts) - t_p))[:, None] * np.asarray(dist[0])[None]
    assert np.all(np.asarray(dist) <= bound * (1 + 1e-6))
    # not vacuous: the pre-trained field alone contracts by exp(int a) =
    # sigma_1 / sigma_{t_p} = 0.686 > exp(-c/4) = 0.607, violating the c bound
    _, d_pre = F.pair_distances(F.make_field(pre_apply, {}), xa, xa + delta, 400,
                                method="rk4", t0=t_p, t1=1.0)
    ratio = np.asarray(d_pre[-1]) / np.asarray(d_pre[0])
    np.testing.assert_allclose(ratio, s / float(F.gaussian_sigma_t(t_p, s)), rtol=1e-6)
    assert np.all(ratio > np.exp(-c * (1 - t_p)))
