"""Reproduction of FT-FM / ResFT-FM (arXiv 2510.02081) at CPU scale.

Every comparative row is measured over ``num_seeds`` independent seeds (data,
initialisation, noise; the training loops are vmapped over seeds) and carries
the 95% Student-t interval of the *paired* per-seed difference; "A beats B"
passes only when that interval excludes 0 in the claimed direction (issue 13).

(a) 2D few-step gap (8 Gaussians): pre-train CFM, then FT-FM and ResFT-FM at
    N = 1, 2, 4, 8 Euler steps; MMD to held-out data; the combined-field
    contraction certificate; a perturbation inside the contraction window and its
    bound; the everywhere-contracting residual as a finding. Plus the closed-form
    Gaussian case measuring both sides of Theorem 1 and the stiffness
    ``L_u ~ 1/(2s)`` (deterministic, one seed).
(b) class-conditional 8x8 digits: FID-like distance on the features of a
    classifier trained once, at N = 2, 4.
(c) two-goal imitation around an obstacle (the paper's robot setting): the
    agent's *state* is pushed mid-episode; success under pushes and the distance
    to the unpushed episode's path at the end of the episode, N = 1, 2, 4.

All fine-tunings use pairs from the pre-trained model's inverse ODE (adaptive
Dopri5), the Gaussian reconstruction likelihood with sigma = 1 and Adam.

ResFT-FM (issue 12). The residual is :class:`gapjax.flow.LateContractingResidual`
with ``beta = 1``: before ``t_c`` it is free (``free_lip``-Lipschitz), on the
window ``[t_c, 1]`` the combined field is ``-kappa x + L h + b`` with
``L < kappa - c``, so ``sym J_x (v_pre + r) <= -c I`` for *every* x there. The
gain design ``beta = 0`` (``kappa >= lambda_pre + c``) was tried first on the
tuning seed (config seed 0): along the pre-trained 2D trajectories
``lambda_pre(t) = max eig sym J v_pre`` is 6-9 on t in [0.5, 0.8] (q90 3-5,
median -1.8..1.3: samples between modes, where the field splits them), so the
certified gain pulls every mode to the origin at rate ~lambda_pre + c and
generation collapses; the estimate is still recorded per seed
(``lambda_pre_window``). On the tuning seed ``t_c = 0.5`` with ``beta = 1`` gave
MMD 1.65/1.20/1.03 vs pre-trained 0.38/0.054/0.026 at N = 2/4/8 (a field
contracting on the whole window cannot move modes apart, and the free part
must then do all the splitting in one or two steps), ``t_c = 0.75`` gave
0.045/0.092/0.060, so ``t_c = 0.75`` (the perturbation of claim 2 at step 3 of
4, t_p = 0.75, lies in the window), ``scale = 2`` and ``free_init = 1`` were
chosen there. The verdict seeds are drawn from config seed 1 (disjoint).

The everywhere-contracting residual (``ContractingResidual``,
``sym J_r <= -c I`` for all x, t) is kept as a finding: explicit Euler scales a
direction of slope ``a`` by ``1 + tau a < exp(tau a)``, so few-step samplers of
straight-path fields over-contract and such a residual cannot lower their error
(proved on the closed-form Gaussian in
``tests/test_flow.py::test_euler_overcontracts_and_contracting_residual_cannot_help``).
The former midpoint-sampler rows (single seed: the everywhere-contracting
residual lowered 2D midpoint MMD at N = 1, 2, 4 where few midpoint steps
overshoot, not at N = 8 nor on the digits) and the digits rows of that residual
were dropped to keep the quick run within its time budget with 5 seeds.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gapjax.flow as F
from gapjax import report
from gapjax.config import check_config
from gapjax.data import batch_at, load_digits, sample_toy2d
from gapjax.report import Claim, ci_fields, paired_ci
from gapjax.train import init_train_state, scan_train_steps

NAME = "flow"
# Targets, fixed before the runs (issue 12; verdict seeds from config seed 1).
FEW_STEP_TARGET = "paired 95% CI of error(ResFT-FM) - error(pre-trained) < 0 at every N"
PERTURB_TARGET = "paired 95% CIs of dev(ResFT-FM) - dev(FT-FM) and - dev(pre-trained) < 0"
SWEEP_TARGET = "paired 95% CI of dev(c_next) - dev(c) < 0 for consecutive c"
BOUND_TOL = 1e-3  # float32 RK4 round-off on a ratio of distances
BOUND_TARGET = f"max over samples and seeds of dev / (exp(-c (1 - t_p)) |delta|) <= 1 + {BOUND_TOL}"
CERT_TOL = 1e-4  # float32 round-off allowed in the certificate
POLICY_MARGIN = 0.05  # "at least as successful": CI low of the success difference > -margin
POLICY_TARGET = (f"at every N: CI low of success(ResFT) - success(X) > -{POLICY_MARGIN} and CI "
                 f"high of dev(ResFT) - dev(X) < 0, X = pre-trained, FT-FM")
EVERYWHERE_TARGET = ("paired 95% CI of MMD(everywhere-contracting ResFT) - MMD(pre-trained) > 0 "
                     "at every N (the measured direction: it raises the error)")
THEOREM_TARGET = "measured <= bound at every N (exact and learned field)"
STIFF_TOL = 0.1  # |2 s L_u - 1| < 0.1 for every s


# ------------------------------------------------------------------ helpers

def _fit_seeds(make_loss, pre_s, p0_s, tx, data_s, batch_size, steps, keys):
    """``steps`` updates per seed in one jitted, seed-vmapped scan.

    ``make_loss(pre_params) -> loss_fn`` (the frozen model differs per seed);
    ``pre_s``, ``p0_s``, ``data_s`` carry a leading seed axis, ``keys`` (S,).
    Returns (params (S, ...), losses (S, steps)).
    """
    def one(pre, p0, data, key):
        loss_fn = make_loss(pre)
        state = init_train_state(key, lambda _: {"params": p0}, tx)
        kb = jax.random.fold_in(key, 1)
        state, m = scan_train_steps(loss_fn, tx, state,
                                    lambda t: batch_at(kb, t, data, batch_size), steps)
        return state.params, m["loss"]

    params, losses = jax.jit(jax.vmap(one))(pre_s, p0_s, data_s, keys)
    return params, np.asarray(losses)


def _fit(loss_fn, params, tx, data, batch_size, steps, key):
    """One seed: ``steps`` updates in one jitted scan. Returns (params, losses)."""
    one = jax.tree.map(lambda a: a[None], params)
    params_s, losses = _fit_seeds(lambda _: loss_fn, one, one, tx, jax.tree.map(lambda a: a[None], data), batch_size,
        steps, key[None])
    return _seed(params_s, 0), losses[0]


def _seed(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def _late_residual(cfg, rate=None, num_classes=None):
    return F.LateContractingResidual(
        rate=cfg.res_rate if rate is None else rate, t_c=cfg.t_c, t_e=1.0, beta=1.0,
        free_lip=cfg.free_lip, free_init=cfg.free_init, scale=cfg.res_scale,
        features=(64, 64), num_classes=num_classes)


def _finetune(kind, net, pre_s, pairs_s, n, cfg, keys, *, num_classes=None, rate=None,
              conditional=False):
    """FT-FM (``"ft"``), late-window ResFT-FM (``"res"``) or the
    everywhere-contracting ResFT-FM (``"everywhere"``) at N = n Euler steps,
    vmapped over seeds. Returns ``(build, params_s)`` with ``build(pre, params,
    c) -> field`` for one seed."""
    x2 = _seed(pairs_s, 0)["x0"][:2]
    c2 = _seed(pairs_s, 0).get("c")
    c2 = None if c2 is None else c2[:2]
    if kind == "ft":
        make_loss = lambda pre: F.ftfm_loss(net.apply, n_steps=n, conditional=conditional)
        p0_s = {"field": pre_s}
        lr = cfg.ft_lr

        def build(pre, p, c):
            return F.make_field(net.apply, p["field"], c)
    elif kind == "res":
        res = _late_residual(cfg, rate, num_classes)
        rp = jax.vmap(lambda k: res.init(k, x2, 0.0, c2, v_pre=x2)["params"])(keys)
        make_loss = lambda pre: F.late_resft_loss(net.apply, pre, res.apply, n_steps=n,
                                                  conditional=conditional)
        p0_s, lr = {"field": rp}, cfg.res_lr

        def build(pre, p, c):
            return F.late_residual_field(net.apply, pre, res.apply, p["field"], c)
    elif kind == "everywhere":
        res = F.ContractingResidual(rate=cfg.everywhere_rate, features=(64, 64),
                                    num_classes=num_classes)
        rp = jax.vmap(lambda k: res.init(k, x2, 0.0, c2)["params"])(keys)
        make_loss = lambda pre: F.resft_loss(net.apply, pre, res.apply, n_steps=n,
                                             conditional=conditional)
        p0_s, lr = {"field": rp}, cfg.res_lr

        def build(pre, p, c):
            return F.residual_field(net.apply, pre, res.apply, p["field"], c)
    else:
        raise ValueError(f"kind must be 'ft', 'res' or 'everywhere', got {kind!r}")
    params_s, _ = _fit_seeds(make_loss, pre_s, p0_s, optax.adam(lr), pairs_s,
                             cfg.batch_size, cfg.ft_steps, keys)
    return build, params_s


def _sample_seeds(build, pre_s, params_s, z_s, n, c=None):
    """(S, B, ...) N-step Euler samples (n None: adaptive Dopri5)."""
    def one(pre, p, z):
        return F.forward_map(build(pre, p, c), z, n)

    return jax.jit(jax.vmap(one))(pre_s, params_s, z_s)


def _inverse_pairs(net, pre_s, x1_s, c_s=None):
    """Inverse-ODE pairs per seed (adaptive Dopri5 of the pre-trained field)."""
    def one(pre, x1, c):
        x0 = F.odeint_reference(F.make_field(net.apply, pre, c), x1, t0=1.0, t1=0.0)
        return x0

    x0 = jax.jit(jax.vmap(one))(pre_s, x1_s, c_s)
    out = {"x0": x0, "x1": x1_s}
    if c_s is not None:
        out["c"] = c_s
    return out


def _pretrain(net, x_s, c_s, cfg, keys, conditional=False):
    xs0 = x_s[0][:2]
    cs0 = None if c_s is None else c_s[0][:2]
    p0 = jax.vmap(lambda k: net.init(k, xs0, 0.0, cs0)["params"])(keys)
    data = {"x1": x_s} if c_s is None else {"x1": x_s, "c": c_s}
    pre, _ = _fit_seeds(lambda _: F.cfm_loss(net.apply, conditional=conditional), p0, p0,
                        optax.adam(cfg.lr), data, cfg.batch_size, cfg.pretrain_steps, keys)
    return pre


def _paired(a, b):
    """Paired interval of a - b over seeds (a, b: (S,))."""
    return paired_ci(np.asarray(a, np.float64), np.asarray(b, np.float64))


def _all_below(ivs):
    return all(iv.excludes_zero("<") for iv in ivs)


def _worst_hi(ivs):
    """The interval with the largest upper end (the one deciding "all < 0")."""
    return max(ivs, key=lambda iv: iv.high)


# ---------------------------------------------------------- (a) 2D few-step

def toy_experiment(out_dir, cfg, key, name, num_seeds):
    """All 2D measurements for ``num_seeds`` seeds (vmapped training)."""
    seeds = jax.random.split(key, num_seeds)
    ks = [jax.random.split(k, 6) for k in seeds]
    k_data, k_test, k_pre, k_ft, k_z, k_p = (jnp.stack([k[i] for k in ks]) for i in range(6))
    n_data = max(20000, cfg.num_pairs)
    x_s = jnp.stack([sample_toy2d(name, k, n_data) for k in k_data])
    xtest_s = [sample_toy2d(name, k, cfg.num_eval) for k in k_test]
    net = F.VelocityMLP(features=tuple(cfg.hidden))
    pre_s = _pretrain(net, x_s, None, cfg, k_pre)
    z_s = jax.vmap(lambda k: jax.random.normal(k, (cfg.num_eval, 2)))(k_z)
    pairs_s = _inverse_pairs(net, pre_s, x_s[:, :cfg.num_pairs])
    pre_build = lambda pre, p, c: F.make_field(net.apply, pre, c)

    def mmd(xs):
        return [float(F.mmd_rbf(xs[i], xtest_s[i])) for i in range(num_seeds)]

    # lambda_pre(t) on the window along the pre-trained (RK4, 64-step) trajectories:
    # the bound the gain design (beta = 0) would need; recorded, not used (beta = 1)
    win = jnp.linspace(cfg.t_c, 1.0, 5)
    lam = []
    for i in range(num_seeds):
        fld = F.make_field(net.apply, _seed(pre_s, i))
        _, path = F.odeint(fld, z_s[i, :256], 64, method="rk4", return_path=True)
        path = jnp.concatenate([z_s[i, :256][None], path], 0)
        idx = np.round(np.asarray(win) * 64).astype(int)
        lam.append(np.asarray(F.estimate_lambda_pre(fld, path[idx], win)).tolist())
    rows = {k: {} for k in ("pre", "ft", "res", "everywhere")}
    samples, certs, models = {}, {}, {}
    for n in cfg.n_steps:
        kf = jax.vmap(lambda k: jax.random.fold_in(k, n))(k_ft)
        xs = _sample_seeds(pre_build, pre_s, pre_s, z_s, n)
        rows["pre"][n], samples[("pre", n)] = mmd(xs), xs
        kinds = ("ft", "res") + (("everywhere",) if n in cfg.everywhere_n_steps else ())
        for kind in kinds:
            build, params_s = _finetune(kind, net, pre_s, pairs_s, n, cfg, kf)
            xs = _sample_seeds(build, pre_s, params_s, z_s, n)
            rows[kind][n], samples[(kind, n)] = mmd(xs), xs
            models[(kind, n)] = (build, params_s)
            if kind == "res":
                certs[n] = _window_certificate(build, pre_s, params_s, z_s, n, cfg)
    # perturbation inside the window: after step at_step of N = perturb_steps
    n, at = cfg.perturb_steps, cfg.perturb_at
    t_p = at / n
    dev = {k: _deviation(*models.get((k, n), (pre_build, pre_s)), pre_s, z_s, n, at, cfg, k_p)
           for k in ("pre", "ft", "res")}
    sweep = {}
    kf = jax.vmap(lambda k: jax.random.fold_in(k, n))(k_ft)
    for rate in cfg.rate_sweep:
        if rate == cfg.res_rate:
            build, params_s = models[("res", n)]
        else:
            build, params_s = _finetune("res", net, pre_s, pairs_s, n, cfg, kf, rate=rate)
        sweep[rate] = {"deviation": _deviation(build, params_s, pre_s, z_s, n, at, cfg, k_p),
                       "bound": _bound_check(build, params_s, pre_s, z_s, n, at, rate, cfg,
                                             k_p),
                       "certificate": _window_certificate(build, pre_s, params_s, z_s, n, cfg,
                                                          perturbed=True, key=k_p)}
    fig = _toy_figure(out_dir, name, samples, rows, list(cfg.n_steps), xtest_s[0])
    return dict(rows=rows, certificates=certs, deviation=dev, rate_sweep=sweep, t_p=t_p,
                lambda_pre_window={"t": np.asarray(win).tolist(), "per_seed": lam},
                figure=fig)


def _perturbations(key_s, shape, norm):
    def one(k):
        p = jax.random.normal(jax.random.fold_in(k, 99), shape)
        return norm * p / jnp.linalg.norm(p, axis=-1, keepdims=True)

    return jax.vmap(one)(key_s)


def _deviation(build, params_s, pre_s, z_s, n, at, cfg, k_p):
    """Per-seed mean final deviation (S,) when a perturbation of norm
    ``perturb_norm`` is added after ``at`` of the N Euler steps."""
    pert_s = _perturbations(k_p, z_s.shape[1:], cfg.perturb_norm)

    def one(pre, p, z, pert):
        return jnp.mean(F.perturbation_deviation(build(pre, p, None), z, pert, n, at))

    return np.asarray(jax.jit(jax.vmap(one))(pre_s, params_s, z_s, pert_s)).tolist()


def _bound_check(build, params_s, pre_s, z_s, n, at, rate, cfg, k_p):
    """Contraction consequence on the window: from the Euler state at t_p and
    that state + delta, RK4 (32 steps) to t = 1; max ratio of the final distance
    to ``exp(-c (1 - t_p)) |delta|`` (continuous time), and the same ratio for
    the remaining Euler steps of the sampler."""
    pert_s = _perturbations(k_p, z_s.shape[1:], cfg.perturb_norm)
    t_p = at / n

    def one(pre, p, z, pert):
        field = build(pre, p, None)
        xa = F.odeint(field, z, at, t0=0.0, t1=t_p)
        _, dist = F.pair_distances(field, xa, xa + pert, 32, method="rk4", t0=t_p, t1=1.0)
        _, de = F.pair_distances(field, xa, xa + pert, n - at, method="euler", t0=t_p, t1=1.0)
        b = jnp.exp(-rate * (1.0 - t_p)) * dist[0]
        return jnp.max(dist[-1] / b), jnp.max(de[-1] / b)

    rk, eu = jax.jit(jax.vmap(one))(pre_s, params_s, z_s, pert_s)
    return {"rk4_max_ratio": np.asarray(rk).tolist(), "euler_max_ratio": np.asarray(eu).tolist()}


def _window_certificate(build, pre_s, params_s, z_s, n, cfg, perturbed=False, key=None):
    """max over seeds of ``certify_contraction`` of the combined field at the
    states the N-step Euler sampler visits at its window times (and at those
    states + the claim-2 perturbation when ``perturbed``); None if no step of
    the sampler starts in the window."""
    ts = [k / n for k in range(n) if k / n >= cfg.t_c]
    if not ts:
        return None
    out = []
    for i in range(z_s.shape[0]):
        field = build(_seed(pre_s, i), _seed(params_s, i), None)
        z = z_s[i, :256]
        _, path = F.odeint(field, z, n, return_path=True)
        path = jnp.concatenate([z[None], path], 0)
        for t in ts:
            x = path[round(t * n)]
            if perturbed:
                x = jnp.concatenate([x, x + _perturbations(key[i:i + 1], x.shape,
                                                           cfg.perturb_norm)[0]], 0)
            out.append(float(F.certify_contraction(field, x, t)))
    return max(out)


def _toy_figure(out_dir, name, samples, rows, ns, xtest):
    fig, axes = report.new_figure(3, len(ns) + 1, figsize=(3 * (len(ns) + 1), 9))
    labels = {"pre": "pre-trained", "ft": "FT-FM", "res": "ResFT-FM (late window)"}
    for i, kind in enumerate(("pre", "ft", "res")):
        for j, n in enumerate(ns):
            ax = axes[i, j]
            x = np.asarray(samples[(kind, n)][0])
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
            ax.set_title(f"{labels[kind]}, N={n}\nMMD {rows[kind][n][0]:.3f} (seed 0)",
                         fontsize=8)
            ax.set_xlim(-3.5, 3.5)
            ax.set_ylim(-3.5, 3.5)
            ax.set_xticks([])
            ax.set_yticks([])
    ax = axes[0, -1]
    ax.scatter(np.asarray(xtest)[:, 0], np.asarray(xtest)[:, 1], s=1, c="k")
    ax.set_title("data", fontsize=8)
    ax = axes[1, -1]
    labels["everywhere"] = "everywhere-contracting"
    for kind in ("pre", "ft", "res", "everywhere"):
        nk = [n for n in ns if n in rows[kind]]
        ax.semilogy(nk, [max(np.mean(rows[kind][n]), 1e-5) for n in nk], "o-",
                    label=labels[kind])
    ax.set_xlabel("Euler steps N")
    ax.set_title("MMD vs N (seed mean)", fontsize=8)
    ax.legend(fontsize=6)
    axes[2, -1].axis("off")
    return report.save_figure(fig, out_dir, f"flow_toy_{name}")


# ------------------------------------------------------ Theorem 1 (closed form)

def theorem_experiment(out_dir, cfg, key):
    mu, s = cfg.mu, cfg.s
    xdata = mu + s * jax.random.normal(key, (20000, 1))
    net = F.VelocityMLP(features=tuple(cfg.hidden))
    p0 = net.init(key, xdata[:2], 0.0)["params"]
    params, _ = _fit(F.cfm_loss(net.apply), p0, optax.adam(2e-3), {"x1": xdata}, 256,
                     cfg.pretrain_steps, jax.random.fold_in(key, 1))
    learned = F.make_field(net.apply, params)
    exact = lambda x, t: F.gaussian_optimal_field(x, t, mu, s)
    x0max = 3.0
    x0 = jnp.linspace(-x0max, x0max, 241)[:, None]
    lip = F.gaussian_field_lipschitz(s)
    accel = F.gaussian_path_acceleration_max(s, x0max)
    # delta = sup |v_theta - v*| over the tube the samplers visit: t in [0, 1],
    # x within t mu +- 1.2 x0max sigma_t (contains all exact and Euler states)
    ts = jnp.linspace(0.0, 1.0, 201)
    offs = jnp.linspace(-1.2 * x0max, 1.2 * x0max, 241)[:, None]

    @jax.jit
    def sup_diff(p):
        def at(t):
            x = t * mu + F.gaussian_sigma_t(t, s) * offs
            return jnp.max(jnp.abs(F.make_field(net.apply, p)(x, t) - exact(x, t)))
        return jnp.max(jax.lax.map(at, ts))

    delta = float(sup_diff(params))
    out = {"delta_learned": delta, "L_u": lip, "M": accel, "rows": {}}
    for n in cfg.n_steps:
        taus = jnp.full((n,), 1.0 / n)
        row = {}
        for label, field, d in (("exact", exact, 0.0), ("learned", learned, delta)):
            xn = jax.jit(lambda z: F.odeint(field, z, n))(x0)
            lhs = float(jnp.max(jnp.abs(xn - (mu + s * x0))))
            row[label] = {"measured": lhs, "bound": float(F.theorem1_bound(d, lip, accel, taus))}
        out["rows"][n] = row
    out["stiffness"] = {str(ss): F.gaussian_field_lipschitz(ss) for ss in cfg.stiffness_s}
    # Jacobian norms of the learned field along its own Euler trajectories
    _, norms = F.trajectory_jacobian_norms(learned, x0, 32)
    out["learned_max_jacobian"] = float(jnp.max(norms))
    ns = list(cfg.n_steps)
    fig, ax = report.new_figure(1, 2, figsize=(9, 3.5))
    for label, st in (("exact", "-"), ("learned", "--")):
        ax[0].loglog(ns, [out["rows"][n][label]["measured"] for n in ns], "o" + st,
                     label=f"measured, {label} field")
        ax[0].loglog(ns, [out["rows"][n][label]["bound"] for n in ns], "s" + st,
                     label=f"Theorem 1 bound, {label}")
    ax[0].set_xlabel("Euler steps N")
    ax[0].set_ylabel("max final error")
    ax[0].legend(fontsize=7)
    ax[0].set_title(f"N(mu={mu}, s={s}); delta={delta:.3f}", fontsize=9)
    sv = np.array(cfg.stiffness_s)
    ax[1].loglog(sv, [out["stiffness"][str(x)] for x in cfg.stiffness_s], "o-", label="L_u")
    ax[1].loglog(sv, 1 / (2 * sv), "k--", label="1/(2s)")
    ax[1].set_xlabel("target std s")
    ax[1].legend(fontsize=8)
    ax[1].set_title("stiffness of the optimal field", fontsize=9)
    out["figure"] = report.save_figure(fig, out_dir, "flow_theorem1")
    return out


# ------------------------------------------------------------------ (b) digits

def digits_experiment(out_dir, cfg, key, num_seeds):
    train, test = load_digits(flat=True)
    xtr, ytr = jnp.asarray(train.x), jnp.asarray(train.y)
    k_cls, k_seeds = jax.random.split(key)
    # classifier, trained once (the fixed feature extractor of the metric)
    clf = F.Classifier()
    cp0 = clf.init(k_cls, xtr[:2])["params"]

    def clf_loss(p, coll, batch, k):
        logits, _ = clf.apply({"params": p}, batch["x"])
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))
        return loss, (coll, {})

    state = init_train_state(k_cls, lambda _: {"params": cp0}, optax.adam(1e-3))
    kb = jax.random.fold_in(k_cls, 1)
    state, _ = jax.jit(lambda st: scan_train_steps(
        clf_loss, optax.adam(1e-3), st,
        lambda t: batch_at(kb, t, {"x": xtr, "y": ytr}, 128), cfg.classifier_steps))(state)
    cparams = state.params
    feats = jax.jit(lambda x: clf.apply({"params": cparams}, x))
    logits_te, f_test = feats(jnp.asarray(test.x))
    clf_acc = float(jnp.mean(jnp.argmax(logits_te, -1) == jnp.asarray(test.y)))

    if cfg.net == "conv":    # images (B, 8, 8) through VelocityConv
        shape, net = (8, 8), F.VelocityConv(channels=cfg.channels, num_classes=10)
    elif cfg.net == "mlp":   # flat (B, 64) through VelocityMLP
        shape, net = (64,), F.VelocityMLP(features=tuple(cfg.hidden), num_classes=10)
    else:
        raise ValueError(f"digits.net must be 'mlp' or 'conv', got {cfg.net!r}")
    seeds = jax.random.split(k_seeds, num_seeds)
    k_pre, k_ft, k_z = (jnp.stack([jax.random.fold_in(k, i) for k in seeds]) for i in range(3))
    xv = xtr.reshape(-1, *shape)
    x_s = jnp.broadcast_to(xv, (num_seeds,) + xv.shape)
    c_s = jnp.broadcast_to(ytr, (num_seeds,) + ytr.shape)
    pre_s = _pretrain(net, x_s, c_s, cfg, k_pre, conditional=True)
    pairs_s = _inverse_pairs(net, pre_s, x_s, c_s)
    labels = jnp.repeat(jnp.arange(10), cfg.samples_per_class)
    z_s = jax.vmap(lambda k: jax.random.normal(k, (labels.shape[0], *shape)))(k_z)

    def fid(xs):
        return [float(F.frechet_distance(feats(xs[i].reshape(xs.shape[1], 64))[1], f_test))
                for i in range(num_seeds)]

    pre_build = lambda pre, p, c: F.make_field(net.apply, pre, c)
    rows = {"pre": {}, "ft": {}, "res": {}}
    shown = {}
    for n in cfg.n_steps:
        xs = _sample_seeds(pre_build, pre_s, pre_s, z_s, n, labels)
        rows["pre"][n], shown[("pre", n)] = fid(xs), xs[0]
        kf = jax.vmap(lambda k: jax.random.fold_in(k, n))(k_ft)
        for kind in ("ft", "res"):
            build, params_s = _finetune(kind, net, pre_s, pairs_s, n, cfg, kf, num_classes=10,
                                        conditional=True)
            xs = _sample_seeds(build, pre_s, params_s, z_s, n, labels)
            rows[kind][n], shown[(kind, n)] = fid(xs), xs[0]
    data_fid = float(F.frechet_distance(feats(xtr)[1], f_test))
    n0 = cfg.n_steps[0]
    kinds = ("pre", "ft", "res")
    titles = {"pre": "pre-trained", "ft": "FT-FM", "res": "ResFT-FM (late window)"}
    fig, axes = report.new_figure(len(kinds), 10, figsize=(10, 1.1 * len(kinds)))
    sel = np.arange(10) * cfg.samples_per_class
    raw = load_digits(flat=True, normalize=False)[0].x  # undo the standardisation for display
    mean, std = raw.mean(0), raw.std(0) + 1e-6
    for i, kind in enumerate(kinds):
        imgs = np.asarray(shown[(kind, n0)])[sel].reshape(-1, 64)
        for j in range(10):
            axes[i, j].imshow(np.clip(imgs[j] * std + mean, 0, 1).reshape(8, 8), cmap="gray_r",
                              vmin=0, vmax=1)
            axes[i, j].axis("off")
        axes[i, 0].set_title(titles[kind] + f" N={n0}: FID {rows[kind][n0][0]:.2f} (seed 0)",
                             fontsize=7, loc="left")
    fig_path = report.save_figure(fig, out_dir, "flow_digits")
    return dict(rows=rows, classifier_test_acc=clf_acc, train_vs_test_fid=data_fid,
                figure=fig_path, net=cfg.net)


# ------------------------------------------------------------------ (c) policy

def policy_experiment(out_dir, cfg, key, num_seeds):
    task = F.TwoGoalTask()
    seeds = jax.random.split(key, num_seeds)
    k_demo, k_pre, k_ft, k_roll = (jnp.stack([jax.random.fold_in(k, i) for k in seeds])
                                   for i in range(4))
    demos = [F.demonstrations(k, task, cfg.num_demos) for k in k_demo]
    s_s = jnp.stack([d[0] for d in demos])
    a_s = jnp.stack([d[1] for d in demos])
    net = F.VelocityMLP(features=tuple(cfg.hidden))
    pre_s = _pretrain(net, a_s, s_s, cfg, k_pre, conditional=True)
    pairs_s = _inverse_pairs(net, pre_s, a_s, s_s)
    pre_build = lambda pre, p, c: F.make_field(net.apply, pre, c)
    push_step = task.horizon // 3

    def evaluate(build, params_s, n):
        """Per seed: success without / with pushes, mean final distance between
        the pushed and unpushed episodes (same noise)."""
        def one(pre, p, kr):
            def act(k, s):
                return F.forward_map(build(pre, p, s), jax.random.normal(k, s.shape), n)

            kp = jax.random.fold_in(kr, 7)
            push = jax.random.normal(kp, (cfg.num_rollouts, 2))
            push = cfg.push_norm * push / jnp.linalg.norm(push, axis=-1, keepdims=True)
            ok, path = F.rollout(kr, task, act, cfg.num_rollouts)
            okp, pathp = F.rollout(kr, task, act, cfg.num_rollouts, push=push,
                                   push_step=push_step)
            return (jnp.mean(ok), jnp.mean(okp),
                    jnp.mean(jnp.linalg.norm(path[:, -1] - pathp[:, -1], axis=-1)))

        ok, okp, dev = jax.jit(jax.vmap(one))(pre_s, params_s, k_roll)
        return {"success": np.asarray(ok).tolist(), "success_pushed": np.asarray(okp).tolist(),
                "deviation": np.asarray(dev).tolist()}

    rows = {"pre": {}, "ft": {}, "res": {}}
    for n in cfg.n_steps:
        rows["pre"][n] = evaluate(pre_build, pre_s, n)
        kf = jax.vmap(lambda k: jax.random.fold_in(k, n))(k_ft)
        for kind in ("ft", "res"):
            build, params_s = _finetune(kind, net, pre_s, pairs_s, n, cfg, kf, conditional=True)
            rows[kind][n] = evaluate(build, params_s, n)
    ns = list(cfg.n_steps)
    fig, ax = report.new_figure(1, 2, figsize=(8, 3.2))
    for kind, lab in (("pre", "pre-trained"), ("ft", "FT-FM"), ("res", "ResFT-FM")):
        ax[0].plot(ns, [np.mean(rows[kind][n]["success_pushed"]) for n in ns], "o-", label=lab)
        ax[1].plot(ns, [np.mean(rows[kind][n]["deviation"]) for n in ns], "o-", label=lab)
    ax[0].set_title(f"success under a push of {cfg.push_norm} at step {push_step}", fontsize=8)
    ax[1].set_title("final distance to the unpushed episode", fontsize=8)
    for a in ax:
        a.set_xlabel("Euler steps N")
    ax[0].legend(fontsize=7)
    fig_path = report.save_figure(fig, out_dir, "flow_policy")
    return dict(rows=rows, push_step=push_step, figure=fig_path)


# ------------------------------------------------------------------ claims

def _few_step_claim(label, ns, pre, res, figure, details, note, metric):
    ivs = [_paired(res[n], pre[n]) for n in ns]
    worst = _worst_hi(ivs)
    return Claim(
        NAME, label, measured={"pre": [float(np.mean(pre[n])) for n in ns],
                               "ResFT-FM": [float(np.mean(res[n])) for n in ns]},
        target=FEW_STEP_TARGET.replace("error", metric), passed=_all_below(ivs),
        figure=figure, details={"paired_ci_per_N": {n: [iv.low, iv.high] for n, iv in
                                                    zip(ns, ivs)}, **details},
        note=note, **ci_fields(worst))


def _perturb_note(dev, ivs, r, tcfg):
    m = {k: float(np.mean(v)) for k, v in dev.items()}
    eu = np.mean(r["rate_sweep"][tcfg.res_rate]["bound"]["euler_max_ratio"])
    big = max(r["rate_sweep"])
    return (f"Mean deviations pre {m['pre']:.3f}, FT-FM {m['ft']:.3f}, ResFT-FM {m['res']:.3f} "
            f"(|delta| = {tcfg.perturb_norm}); res - FT-FM CI [{ivs[0].low:.3f}, "
            f"{ivs[0].high:.3f}], res - pre CI [{ivs[1].low:.3f}, {ivs[1].high:.3f}]. One "
            f"window Euler step remains after t_p: at c = {tcfg.res_rate} it shrinks the "
            f"deviation to {m['res'] / tcfg.perturb_norm:.2f} of |delta| (max Euler ratio to the "
            f"bound {eu:.2f}), which FT-FM's fine-tuned last step already matches "
            f"({m['ft'] / tcfg.perturb_norm:.2f}); a larger certified rate separates them "
            f"(c = {big}: {float(np.mean(r['rate_sweep'][big]['deviation'])):.3f}).")


def _digits_note(dg, nsd, cfg):
    rows = dg["rows"]
    miss = [n for n in nsd if not _paired(rows["res"][n], rows["pre"][n]).excludes_zero("<")]
    if not miss:
        return ""
    return ("Misses at N=" + str(miss) + ": " + "; ".join(
        f"N={n}: pre " + ", ".join(f"{v:.2f}" for v in rows["pre"][n]) + " vs ResFT-FM "
        + ", ".join(f"{v:.2f}" for v in rows["res"][n]) for n in miss)
        + f". These samplers step at t >= t_c = {cfg.t_c}, where the residual replaces v_pre "
        "by a field contracting for every x; FT-FM, unconstrained, is below the pre-trained "
        "model there (ft_vs_pre_paired_ci), so the constraint, not the fine-tuning, costs "
        "the margin on the seeds where the pre-trained sampler is already good.")


def _policy_note(pol, npol):
    mean = lambda k, key: ", ".join(f"{np.mean(pol[k][n][key]):.2f}" for n in npol)
    return (f"Success without pushes at N={npol}: pre {mean('pre', 'success')}, FT-FM "
            f"{mean('ft', 'success')}, ResFT-FM {mean('res', 'success')}; with pushes: "
            f"{mean('pre', 'success_pushed')} / {mean('ft', 'success_pushed')} / "
            f"{mean('res', 'success_pushed')}. The push costs every policy a similar few "
            "points, so ResFT-FM's lower success is the fine-tuned policy's quality, not "
            "robustness; at N = 1 no step lies in the window, so that drop comes from the "
            "free residual's form (x enters through a 1-Lipschitz network times a bounded "
            "gain, the state only additively), not from the contraction. Deviations: "
            + ", ".join(
                f"{k} {mean(k, 'deviation')}" for k in ("pre", "ft", "res")) + " -- the "
            "certificate contracts the action flow in x (the action) for a fixed state; the "
            "state enters only as conditioning, which the certificate does not cover, so it "
            "does not contract the closed-loop state dynamics.")


def _claims(res, config) -> list[Claim]:
    claims = []
    tcfg = config.toy
    ns = list(tcfg.n_steps)
    for name, r in res["toy"].items():
        rows = r["rows"]
        ft_ivs = [_paired(rows["ft"][n], rows["pre"][n]) for n in ns]
        miss = [n for n, iv in zip(ns, [_paired(rows["res"][n], rows["pre"][n]) for n in ns])
                if not iv.excludes_zero("<")]
        claims.append(_few_step_claim(
            f"2D {name}: late-window ResFT-FM (combined field certified contracting on "
            f"[{tcfg.t_c}, 1]) reduces few-step error (MMD to data) vs the pre-trained model "
            f"with the same Euler sampler at N={ns}", ns, rows["pre"], rows["res"], r["figure"],
            {"per_seed": rows, "ft_vs_pre_paired_ci": {n: [iv.low, iv.high]
                                                       for n, iv in zip(ns, ft_ivs)}},
            "" if not miss else (
                f"Misses at N={miss}, exactly the samplers with steps at t >= t_c; the "
                f"others (no step in the window, residual free) gain like FT-FM. The steps "
                f"at t >= t_c = {tcfg.t_c} "
                "use the window field -kappa x + L h + b, which replaces v_pre there and is "
                "contracting for every x, so it cannot carry modes apart (straight-path "
                "fields expand between modes until t = 1); the free steps before t_c must "
                "place the modes (not measured separately: whether more fine-tuning closes the "
                "gap). lambda_pre_window records why the gain design (beta = 0) is "
                "worse: its certified gain pulls all modes to the origin at rate "
                "~lambda_pre + c."), "MMD"))
        certs = {n: v for n, v in r["certificates"].items() if v is not None}
        rate = tcfg.res_rate
        cert = max(certs.values())
        claims.append(Claim(
            NAME, f"2D {name}: combined field v_pre + r certified contracting on the window "
            f"(max eig sym J over the Euler states at t >= {tcfg.t_c}, every seed)",
            measured=cert, target=f"<= -{rate} (+{CERT_TOL})", passed=cert <= -rate + CERT_TOL,
            figure=r["figure"], seeds=config.num_seeds,
            details={"per_N": certs, "lambda_pre_window": r["lambda_pre_window"]}))
        dev = r["deviation"]
        ivs = [_paired(dev["res"], dev["ft"]), _paired(dev["res"], dev["pre"])]
        claims.append(Claim(
            NAME, f"2D {name}: perturbation of norm {tcfg.perturb_norm} inside the window "
            f"(after step {tcfg.perturb_at} of {tcfg.perturb_steps}, t_p = {r['t_p']}): final "
            f"deviation of ResFT-FM below FT-FM's and the pre-trained model's",
            measured={k: float(np.mean(v)) for k, v in dev.items()}, target=PERTURB_TARGET,
            passed=_all_below(ivs), figure=r["figure"],
            details={"per_seed": dev, "res_minus_ft": [ivs[0].low, ivs[0].high],
                     "res_minus_pre": [ivs[1].low, ivs[1].high]}, **ci_fields(_worst_hi(ivs)),
            note="" if _all_below(ivs) else _perturb_note(dev, ivs, r, tcfg)))
        sw = r["rate_sweep"]
        rates = sorted(sw)
        ivs = [_paired(sw[b]["deviation"], sw[a]["deviation"]) for a, b in zip(rates, rates[1:])]
        claims.append(Claim(
            NAME, f"2D {name}: the window deviation falls as the certified rate c grows "
            f"(c = {rates}, N = {tcfg.perturb_steps})",
            measured={c: float(np.mean(sw[c]["deviation"])) for c in rates},
            target=SWEEP_TARGET, passed=_all_below(ivs), figure=r["figure"],
            details={"sweep": sw, "paired_ci": [[iv.low, iv.high] for iv in ivs]},
            **ci_fields(_worst_hi(ivs)),
            note="" if _all_below(ivs) else (
                "Per-seed deviations: " + "; ".join(
                    f"c={c}: " + ", ".join(f"{v:.3f}" for v in sw[c]["deviation"])
                    for c in rates) + ". The realised rate is c + (1 - rho) a with a learned "
                "per seed (certificate at the smallest c: "
                f"{sw[rates[0]]['certificate']:.3f}), so between close c the seed spread of "
                "that learned margin exceeds the change in c; interval(s) containing 0: "
                + ", ".join(f"{a}->{b}" for (a, b), iv in zip(zip(rates, rates[1:]), ivs)
                            if not iv.excludes_zero("<")) + ".")))
        ratio = max(max(sw[c]["bound"]["rk4_max_ratio"]) for c in rates)
        claims.append(Claim(
            NAME, f"2D {name}: deviation after a perturbation at t_p = {r['t_p']} stays below "
            f"the certificate's bound exp(-c (1 - t_p)) |delta| (continuous time, RK4), every c",
            measured=ratio, target=BOUND_TARGET, passed=ratio <= 1 + BOUND_TOL,
            figure=r["figure"], seeds=config.num_seeds,
            details={c: sw[c]["bound"] for c in rates},
            note=("Euler's ratio (euler_max_ratio) is reported, not judged: a discrete step "
                  "multiplies a deviation by I + tau J, which the continuous-time "
                  "certificate does not bound.")))
        ne = list(tcfg.everywhere_n_steps)
        ivs = [_paired(rows["everywhere"][n], rows["pre"][n]) for n in ne]
        claims.append(Claim(
            NAME, f"2D {name}: a residual contracting everywhere (sym J_r <= -c I for all x, "
            f"t) cannot lower Euler's few-step error on an over-contracting straight-path field "
            f"(proved in tests/test_flow.py::test_euler_overcontracts_and_contracting_residual_"
            f"cannot_help); measured direction at N={ne}",
            measured={"pre": [float(np.mean(rows["pre"][n])) for n in ne],
                      "everywhere-contracting": [float(np.mean(rows["everywhere"][n]))
                                                 for n in ne]},
            target=EVERYWHERE_TARGET, passed=all(iv.excludes_zero(">") for iv in ivs),
            figure=r["figure"], details={"paired_ci": {n: [iv.low, iv.high]
                                                       for n, iv in zip(ne, ivs)}},
            **ci_fields(min(ivs, key=lambda iv: iv.low))))
    th = res["theorem"]
    ok = all(th["rows"][n][lab]["measured"] <= th["rows"][n][lab]["bound"]
             for n in th["rows"] for lab in ("exact", "learned"))
    claims.append(Claim(
        NAME, "Theorem 1: Euler error <= exp(L_u t_{N-1}) sum(delta tau + M tau^2/2) on "
        "N(2, 0.1^2), N = 1..32", measured={n: th["rows"][n]["learned"] for n in th["rows"]},
        target=THEOREM_TARGET, passed=ok, figure=th["figure"],
        details={"exact_field": {n: th["rows"][n]["exact"] for n in th["rows"]},
                 "delta": th["delta_learned"], "L_u": th["L_u"], "M": th["M"],
                 "learned_max_jacobian_along_trajectories": th["learned_max_jacobian"]}))
    st = th["stiffness"]
    dev = max(abs(2 * float(s) * L - 1) for s, L in st.items())
    claims.append(Claim(
        NAME, "Stiffness: straight-path optimal field has L_u ~ 1/(2s) as data concentrate",
        measured=st, target=f"|2 s L_u - 1| < {STIFF_TOL}", passed=dev < STIFF_TOL,
        figure=th["figure"]))
    dg = res["digits"]
    nsd = list(dg["rows"]["pre"])
    claims.append(_few_step_claim(
        f"digits ({dg['net']} velocity net): late-window ResFT-FM improves few-step FID-like "
        f"(classifier features) vs the pre-trained model at N={nsd}", nsd, dg["rows"]["pre"],
        dg["rows"]["res"], dg["figure"],
        {"per_seed": dg["rows"], "train_vs_test_fid": dg["train_vs_test_fid"],
         "classifier_test_acc": dg["classifier_test_acc"],
         "ft_vs_pre_paired_ci": {n: [iv.low, iv.high] for n, iv in zip(
             nsd, [_paired(dg["rows"]["ft"][n], dg["rows"]["pre"][n]) for n in nsd])}},
        _digits_note(dg, nsd, config.digits), "FID-like"))
    pol = res["policy"]["rows"]
    npol = list(pol["pre"])
    succ, devs, ok, d_all = {}, {}, True, []
    for other in ("pre", "ft"):
        for n in npol:
            s_iv = _paired(pol["res"][n]["success_pushed"], pol[other][n]["success_pushed"])
            d_iv = _paired(pol["res"][n]["deviation"], pol[other][n]["deviation"])
            succ[f"res-{other}@N={n}"] = [s_iv.low, s_iv.high]
            devs[f"res-{other}@N={n}"] = [d_iv.low, d_iv.high]
            d_all.append(d_iv)
            ok &= s_iv.low > -POLICY_MARGIN and d_iv.excludes_zero("<")
    claims.append(Claim(
        NAME, f"policy (two goals around an obstacle): with the agent's state pushed by "
        f"{config.policy.push_norm} at step {res['policy']['push_step']}, ResFT-FM is at least "
        f"as successful as pre-trained and FT-FM and deviates least from the unpushed "
        f"path (end of episode), N={npol}",
        measured={k: {"success_pushed": [float(np.mean(pol[k][n]["success_pushed"]))
                                         for n in npol],
                      "deviation": [float(np.mean(pol[k][n]["deviation"])) for n in npol]}
                  for k in ("pre", "ft", "res")},
        target=POLICY_TARGET, passed=bool(ok), figure=res["policy"]["figure"],
        **ci_fields(_worst_hi(d_all)), note="" if ok else _policy_note(pol, npol),
        details={"success_paired_ci": succ, "deviation_paired_ci": devs, "per_seed": pol}))
    return claims


def _config(quick: bool):
    from gapjax.configs.flow import get_config

    return get_config("quick" if quick else "full")


def _execute(config, out_dir):
    out_dir = pathlib.Path(out_dir)
    if int(config.num_seeds) < 2:
        raise ValueError(f"num_seeds must be >= 2 for confidence intervals, got "
                         f"{config.num_seeds}")
    if not 0 < config.toy.perturb_at < config.toy.perturb_steps or \
            config.toy.perturb_at / config.toy.perturb_steps < config.toy.t_c:
        raise ValueError("toy.perturb_at / toy.perturb_steps must lie in the window "
                         f"[t_c={config.toy.t_c}, 1), got {config.toy.perturb_at}/"
                         f"{config.toy.perturb_steps}")
    if config.toy.res_rate not in tuple(config.toy.rate_sweep):
        raise ValueError("toy.rate_sweep must contain toy.res_rate")
    key = jax.random.key(int(config.seed))
    kt, kth, kd, kp = jax.random.split(key, 4)
    s = int(config.num_seeds)
    timings, res = {}, {"toy": {}}
    t = time.perf_counter()
    for i, name in enumerate(config.toy.datasets):
        res["toy"][name] = toy_experiment(out_dir, config.toy, jax.random.fold_in(kt, i),
                                          name, s)
    timings["toy"] = time.perf_counter() - t
    t = time.perf_counter()
    res["theorem"] = theorem_experiment(out_dir, config.theory, kth)
    timings["theorem"] = time.perf_counter() - t
    t = time.perf_counter()
    res["digits"] = digits_experiment(out_dir, config.digits, kd, s)
    timings["digits"] = time.perf_counter() - t
    t = time.perf_counter()
    res["policy"] = policy_experiment(out_dir, config.policy, kp, s)
    timings["policy"] = time.perf_counter() - t
    claims = _claims(res, config)
    summary = report._jsonable({"config": config.to_dict(), "seconds": timings,
                                "results": res, "claims": [c.to_json() for c in claims]})
    return summary, claims


def run(out_dir: pathlib.Path, quick: bool = True) -> list[Claim]:
    """Report rows for FT-FM / ResFT-FM (figures under ``out_dir/figures``)."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, claims = _execute(_config(quick), out_dir)
    (out_dir / "flow.json").write_text(json.dumps(summary, indent=1))
    return claims


def main(config, workdir) -> dict:
    """``python -m gapjax.run flow``: runs all sub-experiments, writes
    ``workdir/flow.json`` and figures under ``workdir/figures``."""
    check_config("flow", config)  # every value checked before any work
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    summary, _ = _execute(config, workdir)
    (workdir / "flow.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    import sys

    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/flow_report")
    t0 = time.perf_counter()
    for c in run(out, quick="--full" not in sys.argv):
        print(("PASS" if c.passed else "FAIL"), "|", c.claim, "|", c.measured, "|", c.target)
    print(f"{time.perf_counter() - t0:.1f} s")
