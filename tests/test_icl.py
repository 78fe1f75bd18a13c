"""Checks of gapjax.icl: the spec's closed forms, calibration, references, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from gapjax import icl
from gapjax.parallel import make_mesh, shard_batch
from gapjax.train import Task, init_train_state, make_train_step, train_and_evaluate


# ----------------------------------------------------------------- references
def _np_normal_gamma(x, y, a0, b0, mu0, window=None):
    """Loop-based float64 NumPy Normal-Gamma predictive (independent reference)."""
    t_len, d = x.shape
    out = {k: np.zeros(t_len) for k in ("mean", "var", "scale2", "dof")}
    for t in range(t_len):
        lo = 0 if window is None else max(0, t - window)
        xc, yc = x[lo:t], y[lo:t]
        m0 = np.full(d, mu0)
        lam = np.eye(d) + xc.T @ xc
        mu_n = np.linalg.solve(lam, m0 + xc.T @ yc)
        a_n = a0 + len(yc) / 2
        b_n = b0 + 0.5 * (yc @ yc + m0 @ m0 - mu_n @ lam @ mu_n)
        q = x[t] @ np.linalg.solve(lam, x[t])
        out["mean"][t] = x[t] @ mu_n
        out["var"][t] = b_n / (a_n - 1) * (1 + q)
        out["scale2"][t] = b_n / a_n * (1 + q)
        out["dof"][t] = 2 * a_n
    return out


def _np_least_squares(x, y, alpha):
    t_len, d = x.shape
    mean, var = np.zeros(t_len), np.zeros(t_len)
    for t in range(t_len):
        xc, yc = x[:t], y[:t]
        if alpha > 0:
            w = np.linalg.solve(xc.T @ xc + alpha * np.eye(d), xc.T @ yc)
        else:
            w = np.linalg.lstsq(xc, yc, rcond=None)[0] if t else np.zeros(d)
        mean[t] = x[t] @ w
        var[t] = np.sum((yc - xc @ w) ** 2) / max(1, t - d - 1)
    return mean, var


def _np_pool(x, y, pw, ps):
    t_len = x.shape[0]
    mean, var = np.zeros(t_len), np.zeros(t_len)
    for t in range(t_len):
        logw = np.array([scipy.stats.norm.logpdf(y[:t], x[:t] @ w, s).sum()
                         for w, s in zip(pw, ps)])
        p = np.exp(logw - scipy.special.logsumexp(logw))
        f = pw @ x[t]
        mean[t] = p @ f
        var[t] = p @ (ps ** 2 + f ** 2) - mean[t] ** 2
    return mean, var


# ------------------------------------------------------------------ baselines
def test_baselines_match_float64_numpy(x64, getkey):
    prior = icl.NormalGammaPrior(3.0, 2.0, 0.5)
    b = icl.sample_batch(getkey(), 3, 9, 3, prior)
    xs, ys = b["xs"], b["ys"]
    ng = icl.normal_gamma_predictive(xs, ys, prior)
    ngw = icl.normal_gamma_predictive(xs, ys, prior, window=2)
    rd = icl.ridge_predictive(xs, ys, 0.1)
    ol = icl.ols_predictive(xs, ys)
    pw, ps = icl.make_pool(getkey(), 5, 3, prior)
    pb = icl.pool_bayes_predictive(xs, ys, pw, ps)
    for i in range(3):
        x, y = np.asarray(xs[i]), np.asarray(ys[i])
        ref = _np_normal_gamma(x, y, 3.0, 2.0, 0.5)
        refw = _np_normal_gamma(x, y, 3.0, 2.0, 0.5, window=2)
        for k in ref:
            # float64 linear algebra on 3x3 systems: agreement to ~1e-12.
            np.testing.assert_allclose(ng[k][i], ref[k], rtol=1e-9, atol=1e-10)
            np.testing.assert_allclose(ngw[k][i], refw[k], rtol=1e-9, atol=1e-10)
        for out, alpha in ((rd, 0.1), (ol, 0.0)):
            m, v = _np_least_squares(x, y, alpha)
            # OLS below d pairs is the min-norm solution; pinv vs lstsq agree to ~1e-10.
            np.testing.assert_allclose(out["mean"][i], m, rtol=1e-8, atol=1e-8)
            np.testing.assert_allclose(out["var"][i], v, rtol=1e-8, atol=1e-8)
        m, v = _np_pool(x, y, np.asarray(pw), np.asarray(ps))
        np.testing.assert_allclose(pb["mean"][i], m, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(pb["var"][i], v, rtol=1e-8, atol=1e-10)


def test_bayes_k0_closed_form(x64, getkey):
    # Official setting d = 8, a0 = b0 = 20: E[(y - x^T mu0)^2] = (d+1) b0/(a0-1) = 9.47.
    d, n = 8, 100_000
    prior = icl.NormalGammaPrior(20.0, 20.0, 1.0)
    b = icl.sample_batch(getkey(), n, 1, d, prior)
    out = icl.normal_gamma_predictive(b["xs"], b["ys"], prior)
    x0 = b["xs"][:, 0]
    np.testing.assert_allclose(out["mean"][:, 0], x0.sum(-1), rtol=1e-12)
    np.testing.assert_allclose(out["var"][:, 0], 20 / 19 * (1 + jnp.sum(x0 ** 2, -1)),
                               rtol=1e-12)
    target = (d + 1) * 20.0 / 19.0
    assert abs(target - 9.4737) < 1e-3
    err = (b["ys"][:, 0] - out["mean"][:, 0]) ** 2
    se = float(jnp.std(err)) / math.sqrt(n)
    # Monte-Carlo error: 5 standard errors (se ~ 0.05).
    assert abs(float(err.mean()) - target) < 5 * se


def test_bayes_calibration_and_coverage(x64, getkey):
    # Under the prior the moment-matched variance gives E[z^2] = 1 exactly and the
    # Student-t interval has exact coverage, at every context length.
    n, t_len, d = 10_000, 10, 3
    prior = icl.NormalGammaPrior(20.0, 20.0, 1.0)
    b = icl.sample_batch(getkey(), n, t_len, d, prior)
    out = icl.normal_gamma_predictive(b["xs"], b["ys"], prior)
    mm = icl.uq_metrics(out["mean"], out["var"], b["ys"], var_floor=0.0)
    st = icl.uq_metrics(out["mean"], out["scale2"], b["ys"], dof=out["dof"], var_floor=0.0)
    z2 = (b["ys"] - out["mean"]) ** 2 / out["var"]
    se_z2 = np.asarray(jnp.std(z2, axis=0)) / math.sqrt(n)
    # 5 standard errors per position (10 positions; false alarm ~ 1e-5).
    assert np.all(np.abs(np.asarray(mm["z2"]) - 1) < 5 * se_z2)
    se_cov = math.sqrt(0.9 * 0.1 / n)
    assert np.all(np.abs(np.asarray(st["coverage"]) - 0.9) < 5 * se_cov)
    # Gaussian NLL of the Bayes predictive beats ridge and OLS on average.
    rd = icl.ridge_predictive(b["xs"], b["ys"])
    nll_rd = icl.uq_metrics(rd["mean"], rd["var"], b["ys"])["nll"]
    assert float(mm["nll"].mean()) < float(nll_rd.mean())


def test_false_prior_sigma_converges_under_l_ood(getkey):
    # Bayes with the training prior on L-OOD data (sigma ~ 4): its predicted sigma
    # grows toward the truth with k (b_n / a_n -> sigma^2).
    b = icl.sample_batch(getkey(), 500, 120, 3, icl.TASK_SHIFTS["L-OOD"])
    out = icl.normal_gamma_predictive(b["xs"], b["ys"], icl.TASK_SHIFTS["ID"])
    ratio = jnp.mean(jnp.sqrt(out["var"]) / b["sigma"][:, None], axis=0)
    assert float(ratio[0]) < 0.5 < float(ratio[-1])
    assert bool(jnp.all(jnp.diff(ratio[5:]) > -0.02))


def test_metrics_two_sided_prob_matches_scipy(x64):
    z = jnp.linspace(-4, 4, 17)
    for dof in (3.0, 40.0):
        ref = 1 - 2 * scipy.stats.t.sf(np.abs(np.asarray(z)), dof)
        np.testing.assert_allclose(icl.two_sided_prob(z, jnp.full_like(z, dof)), ref,
                                   rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(icl.two_sided_prob(z),
                               1 - 2 * scipy.stats.norm.sf(np.abs(np.asarray(z))),
                               rtol=1e-10, atol=1e-12)


# -------------------------------------------------------------------- sampler
def test_task_sampler_moments_and_determinism(getkey):
    key = getkey()
    w, s = icl.sample_tasks(key, 100_000, 4, icl.NormalGammaPrior(20.0, 10.0, 1.0))
    tau = 1 / s ** 2
    # E[tau] = a0/b0 = 2, sd(tau) = sqrt(a0)/b0 = 0.447 -> se 1.4e-3; 5 se.
    assert abs(float(tau.mean()) - 2.0) < 5 * 0.447 / math.sqrt(1e5)
    # w - mu0 = sigma * N(0, I): E[(w - 1)^2 / sigma^2] = 1 (se ~ 0.0022 per coordinate).
    assert abs(float(jnp.mean(((w - 1) / s[:, None]) ** 2)) - 1) < 0.02
    fn = jax.jit(icl.make_batch_fn(8, 6, 4, loss_mask=icl.prompt_length_mask(6, 3)))
    a, b, c = fn(key, 3), fn(key, 3), fn(key, 4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.allclose(a["xs"], c["xs"])
    np.testing.assert_array_equal(a["mask"][0], [1, 1, 1, 0, 0, 0])


def test_pool_and_covariate_shifts(getkey):
    pool = icl.make_pool(getkey(), 4, 3)
    b = icl.sample_batch(getkey(), 64, 5, 3, pool=pool)
    match = jnp.all(jnp.isclose(b["w"][:, None], pool[0][None]), -1)
    assert bool(jnp.all(match.sum(-1) == 1))
    x = icl.sample_covariates(getkey(), 2000, 50, 3, "diag_uniform")
    # Per-task diagonal covariance with c_i ~ U[0, 2]: E[x^2] = 1 overall.
    assert abs(float(jnp.mean(x ** 2)) - 1) < 0.05
    xr = icl.sample_covariates(getkey(), 2000, 50, 3, "rotated_diag")
    assert abs(float(jnp.mean(xr ** 2)) - 1) < 0.05  # rotation keeps the trace
    xs = icl.sample_covariates(getkey(), 200, 50, 3, "scaled", scale=2.0)
    assert abs(float(jnp.std(xs)) - 2) < 0.05


# ---------------------------------------------------------------------- model
@pytest.mark.parametrize("fmt", ["interleaved", "paired"])
def test_model_causal_and_window(getkey, fmt):
    model = icl.ICLTransformer(n_dims=3, n_positions=10, n_embd=16, n_layer=2, n_head=2,
                               token_format=fmt)
    b = icl.sample_batch(getkey(), 2, 10, 3)
    params = model.init(getkey(), b["xs"], b["ys"])
    mu, s = model.apply(params, b["xs"], b["ys"])
    assert mu.shape == s.shape == (2, 10) and bool(jnp.all(s > 0))
    t = 6
    xs2 = b["xs"].at[:, t + 1:].add(3.0)
    ys2 = b["ys"].at[:, t:].add(5.0)   # y_t itself must not be seen at position t
    mu2, s2 = model.apply(params, xs2, ys2)
    np.testing.assert_allclose(mu2[:, :t + 1], mu[:, :t + 1], atol=1e-6)
    np.testing.assert_allclose(s2[:, :t + 1], s[:, :t + 1], atol=1e-6)
    assert not np.allclose(mu2[:, t + 1:], mu[:, t + 1:])
    # One layer with window S: pairs before t - S do not influence position t.
    w1 = icl.ICLTransformer(n_dims=3, n_positions=10, n_embd=16, n_layer=1, n_head=2,
                            window=3, token_format=fmt)
    p1 = w1.init(getkey(), b["xs"], b["ys"])
    m1, _ = w1.apply(p1, b["xs"], b["ys"])
    m2, _ = w1.apply(p1, b["xs"].at[:, :5].add(2.0), b["ys"].at[:, :5].add(2.0))
    np.testing.assert_allclose(m2[:, 8:], m1[:, 8:], atol=1e-6)   # sees pairs 5..7
    assert not np.allclose(m2[:, 7], m1[:, 7])                     # sees pair 4


def test_bad_input_errors(getkey):
    with pytest.raises(ValueError, match="a0"):
        icl.NormalGammaPrior(0.0, 1.0)
    with pytest.raises(ValueError, match="b0"):
        icl.NormalGammaPrior(2.0, -1.0)
    model = icl.ICLTransformer(n_dims=3, n_positions=5, n_embd=8, n_layer=1, n_head=2)
    b = icl.sample_batch(getkey(), 2, 6, 3)
    with pytest.raises(ValueError, match="longer than the model's maximum"):
        model.init(getkey(), b["xs"], b["ys"])
    b4 = icl.sample_batch(getkey(), 2, 5, 4)
    with pytest.raises(ValueError, match="covariate dimension 4"):
        model.init(getkey(), b4["xs"], b4["ys"])
    with pytest.raises(ValueError, match="ys must have shape"):
        icl.normal_gamma_predictive(b["xs"], b["ys"][:, :3])
    with pytest.raises(ValueError, match="n_embd"):
        icl.ICLTransformer(n_dims=3, n_positions=5, n_embd=10, n_head=4)
    with pytest.raises(ValueError, match="train_length"):
        icl.prompt_length_mask(5, 6)
    with pytest.raises(ValueError, match="covariates"):
        icl.sample_covariates(getkey(), 1, 2, 3, "bogus")
    with pytest.raises(ValueError, match="pool"):
        icl.sample_batch(getkey(), 2, 3, 3, pool=icl.make_pool(getkey(), 4, 2))


# ------------------------------------------------------------------- training
def _tiny_task(mask=None):
    model = icl.ICLTransformer(n_dims=3, n_positions=8, n_embd=16, n_layer=1, n_head=2,
                               token_format="paired")
    tx = optax.adam(1e-3)
    dummy = jnp.zeros((1, 8, 3)), jnp.zeros((1, 8))
    return model, tx, (lambda k: model.init(k, *dummy)), icl.make_loss_fn(model, mask)


def test_loss_mask_restricts_positions(getkey):
    model, tx, init_fn, _ = _tiny_task()
    b = icl.sample_batch(getkey(), 4, 8, 3)
    params = init_fn(getkey())["params"]
    mask = icl.prompt_length_mask(8, 3)
    loss, _ = icl.make_loss_fn(model, mask)(params, {}, b, None)
    mu, s = model.apply({"params": params}, b["xs"], b["ys"])
    ref = icl.gaussian_nll(mu, s ** 2, b["ys"])[:, :3].mean()
    np.testing.assert_allclose(loss, ref, rtol=1e-6)


def test_train_step_sharded_on_8_devices(getkey):
    assert jax.device_count() == 8
    model, tx, init_fn, loss_fn = _tiny_task()
    batch = icl.make_batch_fn(16, 8, 3)(getkey(), 0)
    key = getkey()
    s1, m1 = make_train_step(loss_fn, tx)(init_train_state(key, init_fn, tx), batch)
    mesh = make_mesh(8)
    s8, m8 = make_train_step(loss_fn, tx, mesh=mesh)(init_train_state(key, init_fn, tx),
                                                    shard_batch(batch, mesh))
    assert len(s8.params["read_in"]["kernel"].sharding.device_set) == 8
    # Same math on 8 shards; only the reduction order differs (float32).
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    np.testing.assert_allclose(m8["grad_norm"], m1["grad_norm"], rtol=1e-4)
    # Adam's first update is ~lr * sign(g): coordinates with |g| ~ 1e-9 may flip
    # under a different summation order, so compare to 1% of lr = 1e-5.
    for a, b in zip(jax.tree.leaves(s8.params), jax.tree.leaves(s1.params)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_train_and_evaluate_resumes(tmp_path, getkey):
    model, tx, init_fn, loss_fn = _tiny_task()
    ev = icl.sample_batch(getkey(), 16, 8, 3)
    task = Task(init_fn=init_fn, loss_fn=loss_fn, tx=tx,
                batch_fn=icl.make_batch_fn(16, 8, 3),
                eval_fn=icl.make_eval_fn(model),
                eval_batches=lambda: [{"xs": ev["xs"], "ys": ev["ys"]}])
    cfg = dict(seed=0, num_steps=4, log_every=1, checkpoint_every=2, progress=False,
               num_devices=8)
    full, _ = train_and_evaluate(task, cfg, tmp_path / "full")
    train_and_evaluate(task, {**cfg, "num_steps": 2}, tmp_path / "part")
    resumed, summ = train_and_evaluate(task, {**cfg, "resume": True}, tmp_path / "part")
    assert summ["step"] == 4 and summ["num_devices"] == 8
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
