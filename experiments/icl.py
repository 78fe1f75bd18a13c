"""In-context uncertainty quantification (Liu et al., arXiv 2405.15115).

``run(out_dir, quick)`` trains one model with :func:`gapjax.train.train_and_evaluate`
and reuses it for the in-distribution, task-shift and covariate-shift
evaluations; the prompt-length, pool-size and context-window sweeps train a
few smaller, shorter models (their scale is written in each Claim's details).
``main(config, workdir)`` is the ``python -m gapjax.run icl`` entry: one
training run plus the in-distribution / shift evaluations.
"""

from __future__ import annotations

import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gapjax import icl
from gapjax.config import check_config
from gapjax.report import Claim, ci_fields, mean_ci, new_figure, paired_ci, save_figure
from gapjax.train import Task, train_and_evaluate

NAME = "icl"
# Targets written before any run (issue 6 / spec "Checks").
QUICK_MSE_RATIO, QUICK_NLL_GAP = 1.10, 0.10      # quick preset (<= 5 CPU minutes)
MEDIUM_MSE_RATIO, MEDIUM_NLL_GAP = 1.05, 0.05    # medium / full presets
SIGMA_TRACK_TOL = 0.10        # mean |sigma_hat / sigma_Bayes - 1| over positions
BAYES_Z2_TOL = 0.10           # |E[z^2] - 1| at every position (eval-set noise)
BAYES_COVERAGE_TOL = 0.03     # |coverage - 0.90| at every position (~4 se at N=2000)
COV_SHIFT_MSE_RATIO = 1.25    # model / Bayes MSE under x ~ N(0, diag(c)), c ~ U[0, 2]
# The quick sweeps train 2x4x32 models for 600 steps; at d = 5 these stay on the
# prior-mean plateau, at d = 2 they learn in context, so the quick sweeps use d = 2.
QUICK_SWEEP_DIM = 2
# Memorising a finite pool takes longer than learning in context: at 600 steps the
# P = 8 model was still worse than NG-Bayes on its own pool tasks (MSE 1.63 vs
# 1.55, pool-Bayes 1.37), at 2000 steps it beats it (1.49). The pool sweep and
# the window sweep (which reuses the P = inf model as S = T) train this long.
QUICK_POOL_STEPS = 2000
# Every claim about a trained model is measured over ICL_SEEDS independent runs
# (config.seed + s: own initialisation and task stream; models of one sweep with
# the same s share the task stream, so their comparisons are paired by seed) and
# judged on the 95% Student-t interval over seeds (gapjax.report.mean_ci /
# paired_ci): "<= target" needs the upper bound below the target, "A < B" the
# paired interval of B - A above 0. The seeds run in a loop, not vmapped with
# num_seeds: on the 2-core CPU one seed-vmapped step of the quick model took
# 12.5x the CPU time of a one-seed step (27.6 s vs 2.2 s per 100 steps, measured
# 2026-12-02), so 5 vmapped seeds would cost 2.5x a loop.
ICL_SEEDS = 5


# ------------------------------------------------------------------- building
def prior_of(config) -> icl.NormalGammaPrior:
    return icl.NormalGammaPrior(config.a0, config.b0, config.mu0)


def build_model(config) -> icl.ICLTransformer:
    return icl.ICLTransformer(
        n_dims=config.dim, n_positions=config.prompt_length, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, pos_encoding=config.pos_encoding,
        window=config.window or None, scale_head=config.scale_head,
        token_format=config.token_format)


def build_optimizer(config) -> optax.GradientTransformation:
    if config.cosine:
        total = max(int(config.num_steps), 2)
        warmup = min(max(int(config.warmup_steps), 1), total - 1)  # short smoke runs
        lr = optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup, total,
                                                config.lr * 0.05)
    else:
        lr = config.lr
    parts = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip > 0 else []
    parts.append(optax.adamw(lr, weight_decay=config.weight_decay))
    return optax.chain(*parts)


def build_task(config, pool=None):
    """``(model, Task)`` for a config (pool: tasks of a finite pool, or None)."""
    model = build_model(config)
    tx = build_optimizer(config)
    mask = (icl.prompt_length_mask(config.prompt_length, config.train_length)
            if config.train_length else None)
    batch_fn = icl.make_batch_fn(config.batch_size, config.prompt_length, config.dim,
                                 prior_of(config), pool=pool,
                                 covariates=config.covariates, loss_mask=mask)
    ev = icl.sample_batch(jax.random.key(config.eval_seed + 1), 256, config.prompt_length,
                          config.dim, prior_of(config))
    dummy = (jnp.zeros((1, config.prompt_length, config.dim)),
             jnp.zeros((1, config.prompt_length)))
    task = Task(init_fn=lambda k: model.init(k, *dummy),
                loss_fn=icl.make_loss_fn(model), tx=tx, batch_fn=batch_fn,
                eval_fn=icl.make_eval_fn(model),
                eval_batches=lambda: [{"xs": ev["xs"], "ys": ev["ys"]}])
    return model, task


def make_pool_for(config):
    if not config.pool_size:
        return None
    return icl.make_pool(jax.random.key(config.seed + 7), config.pool_size, config.dim,
                         prior_of(config))


def train(config, workdir, pool=None):
    """Trains through the shared loop; returns ``(model, params, summary, pool)``.
    ``pool``: the task pool to train on (default: ``make_pool_for(config)``)."""
    pool = make_pool_for(config) if pool is None else pool
    model, task = build_task(config, pool)
    state, summary = train_and_evaluate(task, config, workdir)
    params = jax.device_get(state.params)
    return model, params, summary, pool


# ----------------------------------------------------------------- evaluation
def _np(d):
    return {k: np.asarray(v) for k, v in d.items()}


def evaluate(model, params, batch, bayes_prior, *, train_prior=None, pool=None,
             baselines=True, pred=None):
    """Per-position metrics of the model and the baselines on one eval batch.

    ``bayes_prior`` is the prior that generated the batch (true Bayes); with
    ``train_prior`` the false-prior Bayes (training prior on shifted data) is
    added; with ``pool`` the pool-Bayes predictor. ``pred``: the model's
    ``(mu, var)`` (B, T) if already computed (then ``params`` is unused).
    """
    xs, ys, sig = batch["xs"], batch["ys"], batch["sigma"][:, None]
    mu, var = icl.predict(model, params, xs, ys) if pred is None else pred
    nb = icl.normal_gamma_predictive(xs, ys, bayes_prior)
    sref = jnp.sqrt(nb["var"])
    out = {"model": icl.uq_metrics(mu, var, ys, sigma_ref=sref),
           "bayes": icl.uq_metrics(nb["mean"], nb["var"], ys, sigma_ref=sref)}
    out["bayes_t"] = icl.uq_metrics(nb["mean"], nb["scale2"], ys, dof=nb["dof"])
    out["model_true_sigma"] = icl.uq_metrics(mu, var, ys, sigma_ref=jnp.broadcast_to(sig, mu.shape))
    preds = {"model": mu, "bayes": nb["mean"]}
    if train_prior is not None:
        fb = icl.normal_gamma_predictive(xs, ys, train_prior)
        out["false_prior_bayes"] = icl.uq_metrics(fb["mean"], fb["var"], ys,
                                                  sigma_ref=jnp.broadcast_to(sig, mu.shape))
    if baselines:
        rd = icl.ridge_predictive(xs, ys, 0.1)
        ol = icl.ols_predictive(xs, ys)
        out["ridge"] = icl.uq_metrics(rd["mean"], rd["var"], ys, sigma_ref=sref)
        out["ols"] = icl.uq_metrics(ol["mean"], ol["var"], ys, sigma_ref=sref)
        preds["ridge"] = rd["mean"]
    if pool is not None:
        pb = icl.pool_bayes_predictive(xs, ys, *pool)
        out["pool_bayes"] = icl.uq_metrics(pb["mean"], pb["var"], ys, sigma_ref=sref)
    res = {k: _np(v) for k, v in out.items()}
    res["_preds"] = {k: np.asarray(v) for k, v in preds.items()}
    return res


def _avg(m, key):
    return float(np.mean(m[key]))


@functools.lru_cache(maxsize=None)
def _apply(model):
    """Jitted forward pass, compiled once per model (and prompt shape)."""
    return jax.jit(lambda p, x, y: model.apply({"params": p}, x, y))


def evaluate_seeds(model, params, batch, bayes_prior, **kw) -> list[dict]:
    """:func:`evaluate` for every seed of ``params`` stacked on a leading seed
    axis (one compiled forward pass for all seeds, 512 prompts at a time)."""
    fn = _apply(model)
    xs, ys = batch["xs"], batch["ys"]
    out = []
    for s in range(jax.tree.leaves(params)[0].shape[0]):
        p = jax.tree.map(lambda a: a[s], params)
        mus, vs = [], []
        for i in range(0, xs.shape[0], 512):
            mu, sd = fn(p, xs[i:i + 512], ys[i:i + 512])
            mus.append(mu)
            vs.append(jnp.square(sd))
        out.append(evaluate(model, None, batch, bayes_prior,
                            pred=(jnp.concatenate(mus), jnp.concatenate(vs)), **kw))
    return out


def _plot_uq(res, title, out_dir, name, methods=("model", "bayes", "ridge", "ols")):
    fig, axes = new_figure(1, 4, figsize=(17, 3.6))
    for meth in methods:
        if meth not in res:
            continue
        m = res[meth]
        k = np.arange(len(m["mse"]))
        axes[0].plot(k, m["mse"], label=meth)
        axes[1].plot(k, m["nll"], label=meth)
        axes[2].plot(k, m["sigma"], label=meth)
        cov = res["bayes_t"]["coverage"] if meth == "bayes" else m["coverage"]
        axes[3].plot(k, cov, label=meth + (" (Student-t)" if meth == "bayes" else ""))
    axes[0].set_yscale("log")     # OLS at k = d interpolates and explodes
    lo = float(np.min(res["bayes"]["nll"]))
    axes[1].set_ylim(lo - 0.3, lo + 3.0)
    axes[3].axhline(0.9, color="k", ls=":")
    for ax, t in zip(axes, ("MSE", "Gaussian NLL (nats)", "predicted sigma",
                            "90% interval coverage")):
        ax.set_title(t)
        ax.set_xlabel("context length k")
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, out_dir, name)


def _eval_batch(config, prior, n, covariates="isotropic", seed_offset=0):
    return icl.sample_batch(jax.random.key(config.eval_seed + seed_offset), n,
                            config.prompt_length, config.dim, prior, covariates=covariates)


def shift_evaluations(model, params, config, n):
    """Task shifts (S/M/L-OOD) and covariate shifts, per position."""
    train_prior = prior_of(config)
    tasks = {}
    for i, (name, pr) in enumerate(icl.TASK_SHIFTS.items()):
        b = _eval_batch(config, pr, n, seed_offset=100 + i)
        tasks[name] = evaluate(model, params, b, pr, train_prior=train_prior,
                               baselines=False)
    covs = {}
    for i, cv in enumerate(("diag_uniform", "scaled", "rotated_diag")):
        b = _eval_batch(config, train_prior, n, covariates=cv, seed_offset=200 + i)
        covs[cv] = evaluate(model, params, b, train_prior, baselines=False)
    return tasks, covs


def _summ(res):
    return {meth: {k: [float(x) for x in v] for k, v in m.items()}
            for meth, m in res.items() if not meth.startswith("_")}


# ------------------------------------------------------------------ main entry
def main(config, workdir) -> dict:
    """Trains ``config`` and evaluates in distribution and under shifts."""
    check_config("icl", config)  # every value checked before any work
    workdir = pathlib.Path(workdir)
    t0 = time.perf_counter()
    model, params, summary, pool = train(config, workdir)
    prior = prior_of(config)
    ev = _eval_batch(config, prior, config.eval_tasks)
    res = evaluate(model, params, ev, prior, pool=pool)
    tasks, covs = shift_evaluations(model, params, config, max(config.eval_tasks // 2, 256))
    _plot_uq(res, "in distribution", workdir, "icl_in_distribution")
    out = {"train": summary, "seconds": time.perf_counter() - t0,
           "mse_ratio": _avg(res["model"], "mse") / _avg(res["bayes"], "mse"),
           "nll_gap": _avg(res["model"], "nll") - _avg(res["bayes"], "nll"),
           "in_distribution": _summ(res),
           "task_shift": {k: _summ(v) for k, v in tasks.items()},
           "covariate_shift": {k: _summ(v) for k, v in covs.items()}}
    mse_t, nll_t = ((QUICK_MSE_RATIO, QUICK_NLL_GAP) if config.preset == "quick"
                    else (MEDIUM_MSE_RATIO, MEDIUM_NLL_GAP))
    out["targets"] = {"mse_ratio_max": mse_t, "nll_gap_max": nll_t,
                      "passed": bool(out["mse_ratio"] <= mse_t and out["nll_gap"] <= nll_t)}
    (workdir / "icl_eval.json").write_text(json.dumps(out, indent=1))
    return {k: out[k] for k in ("train", "seconds", "mse_ratio", "nll_gap", "targets")}


# ---------------------------------------------------------- reproduction run
def _sub_config(base, quick, **kw):
    """A smaller/shorter training for the sweeps (quick) or the base scale (full)."""
    c = base.copy_and_resolve_references()
    if quick:
        c.dim = QUICK_SWEEP_DIM
        c.n_layer, c.n_head, c.n_embd = 2, 4, 32
        c.num_steps = 600
        c.lr = 3e-3
        c.warmup_steps = 50
    c.eval_every = 0
    c.checkpoint_every = 0
    c.log_every = 100
    c.progress = False
    for k, v in kw.items():
        c[k] = v
    return c


def _train_seeds(config, workdir, num_seeds):
    """:func:`train` for seeds ``config.seed + s``, ``s < num_seeds`` (a loop, see
    :data:`ICL_SEEDS`), all on the pool of ``config.seed``; returns ``(model,
    params stacked on a leading seed axis, [summaries], pool)``."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    pool = make_pool_for(config)
    params, summaries = [], []
    for s in range(int(num_seeds)):
        c = config.copy_and_resolve_references()
        c.seed = int(config.seed) + s
        model, p, summary, _ = train(c, workdir / f"seed_{s}", pool=pool)
        params.append(p)
        summaries.append(summary)
    return model, jax.tree.map(lambda *a: np.stack(a), *params), summaries, pool


def _ci_le(values, target):
    """Interval of per-seed values and whether its upper bound is <= target."""
    iv = mean_ci(values)
    return iv, bool(iv.high <= target)


def run(out_dir: pathlib.Path, quick: bool = True) -> list[Claim]:
    from gapjax.configs.icl import get_config

    out_dir = pathlib.Path(out_dir)
    runs = out_dir / "runs" / NAME
    runs.mkdir(parents=True, exist_ok=True)
    cfg = get_config("quick" if quick else "full")
    cfg.progress = False
    S = ICL_SEEDS
    mse_target, nll_target = ((QUICK_MSE_RATIO, QUICK_NLL_GAP) if quick
                              else (MEDIUM_MSE_RATIO, MEDIUM_NLL_GAP))
    t_start = time.perf_counter()
    model, params, summary, _ = _train_seeds(cfg, runs / "main", S)
    t_main = time.perf_counter() - t_start
    scale = (f"{cfg.preset} preset: d={cfg.dim}, T={cfg.prompt_length}, "
             f"{cfg.n_layer}x{cfg.n_head}x{cfg.n_embd} {cfg.token_format} tokens, "
             f"{cfg.pos_encoding} positions, batch {cfg.batch_size}, "
             f"{cfg.num_steps} steps, {S} seeds ({t_main:.0f} s incl. compile)")
    prior = prior_of(cfg)
    d, T = cfg.dim, cfg.prompt_length
    claims = []

    # 1. In distribution against all baselines (per seed; figure: seed 0).
    ev = _eval_batch(cfg, prior, cfg.eval_tasks)
    rs = evaluate_seeds(model, params, ev, prior)
    res = rs[0]
    fig_id = _plot_uq(res, f"in distribution, seed 0 ({scale})", out_dir,
                      "icl_in_distribution")
    ratio = [_avg(r["model"], "mse") / _avg(r["bayes"], "mse") for r in rs]
    gap = [_avg(r["model"], "nll") - _avg(r["bayes"], "nll") for r in rs]
    ratio_iv, ratio_ok = _ci_le(ratio, mse_target)
    gap_iv, gap_ok = _ci_le(gap, nll_target)
    per_method = {k: {"mse": _avg(v, "mse"), "nll": _avg(v, "nll"),
                      "coverage": _avg(v, "coverage"), "z2": _avg(v, "z2")}
                  for k, v in res.items() if not k.startswith("_")}
    details = {"scale": scale, "eval_tasks": cfg.eval_tasks, "seeds": S,
               "per_seed": ratio, "per_method_avg_seed0": per_method,
               "mse_per_position_seed0": {k: res[k]["mse"] for k in ("model", "bayes", "ridge")},
               "nll_per_position_seed0": {k: res[k]["nll"] for k in ("model", "bayes", "ridge")},
               "train_summary": summary}
    claims.append(Claim(NAME, "In distribution the trained transformer's MSE (averaged "
                        "over positions) is near the Normal-Gamma Bayes MSE",
                        ratio_iv.mean, f"95% CI of model/Bayes MSE <= {mse_target}",
                        ratio_ok, fig_id, details, **ci_fields(ratio_iv)))
    claims.append(Claim(NAME, "In distribution the transformer's Gaussian NLL (averaged "
                        "over positions) is near the Bayes NLL", gap_iv.mean,
                        f"95% CI of model - Bayes NLL <= {nll_target} nats", gap_ok,
                        fig_id, {"scale": scale, "per_seed": gap,
                                 "model_nll": [_avg(r["model"], "nll") for r in rs],
                                 "bayes_nll": _avg(res["bayes"], "nll")},
                        **ci_fields(gap_iv)))
    track = [float(np.mean(np.abs(r["model"]["sigma_ratio"] - 1))) for r in rs]
    track_iv, track_ok = _ci_le(track, SIGMA_TRACK_TOL)
    claims.append(Claim(NAME, "Predicted sigma tracks the Bayes predictive sigma at every "
                        "context length", track_iv.mean,
                        f"95% CI of mean |sigma_hat/sigma_Bayes - 1| <= {SIGMA_TRACK_TOL}",
                        track_ok, fig_id,
                        {"per_seed": track, "scale": scale,
                         "sigma_ratio_per_position_seed0": res["model"]["sigma_ratio"]},
                        **ci_fields(track_iv)))
    k_lt_d = slice(0, d)

    def _dist(r, other):
        p = r["_preds"]
        return float(np.mean((p["model"][:, k_lt_d] - p[other][:, k_lt_d]) ** 2))

    to_bayes = [_dist(r, "bayes") for r in rs]
    to_ridge = [_dist(r, "ridge") for r in rs]
    closer = paired_ci(to_ridge, to_bayes)
    claims.append(Claim(NAME, "For k < d the transformer follows the prior-using Bayes "
                        "predictor, not ridge",
                        {"to_bayes": float(np.mean(to_bayes)),
                         "to_ridge": float(np.mean(to_ridge))},
                        "paired 95% CI of E|mu_model - mu_ridge|^2 - E|mu_model - "
                        "mu_Bayes|^2 > 0 (k < d)", closer.excludes_zero(">"), fig_id,
                        {"scale": scale, "to_bayes": to_bayes, "to_ridge": to_ridge},
                        **ci_fields(closer)))
    # The Bayes baseline's calibration does not involve the trained model: a
    # closed-form check on the evaluation set (seeds = None).
    bz = res["bayes"]["z2"]
    bc = res["bayes_t"]["coverage"]
    k0 = float(res["bayes"]["mse"][0])
    k0_target = (d + 1) * cfg.b0 / (cfg.a0 - 1)
    k0_se = float(np.std((ev["ys"][:, 0] - res["_preds"]["bayes"][:, 0]) ** 2)
                  / np.sqrt(cfg.eval_tasks))
    ok = (np.all(np.abs(bz - 1) <= BAYES_Z2_TOL) and np.all(np.abs(bc - 0.9)
                                                            <= BAYES_COVERAGE_TOL)
          and abs(k0 - k0_target) <= 4 * k0_se)
    claims.append(Claim(NAME, "Bayes baseline is calibrated: E[z^2] ~ 1, 90% Student-t "
                        "coverage ~ 0.90 at every k, and its k = 0 MSE equals "
                        "(d+1) b0/(a0-1)",
                        {"max|z2-1|": float(np.max(np.abs(bz - 1))),
                         "max|cov-0.9|": float(np.max(np.abs(bc - 0.9))),
                         "mse_k0": k0, "mse_k0_closed_form": k0_target},
                        f"|z2-1| <= {BAYES_Z2_TOL}, |cov-0.9| <= {BAYES_COVERAGE_TOL}, "
                        "k0 MSE within 4 se", bool(ok), fig_id,
                        {"z2": bz, "coverage": bc, "k0_se": k0_se}))

    # 2. Task shift and covariate shift (same models).
    n_shift = max(cfg.eval_tasks // 2, 256)
    train_prior = prior_of(cfg)
    tasks = {}
    for i, (name, pr) in enumerate(icl.TASK_SHIFTS.items()):
        b = _eval_batch(cfg, pr, n_shift, seed_offset=100 + i)
        tasks[name] = evaluate_seeds(model, params, b, pr, train_prior=train_prior,
                                     baselines=False)
    covs = {}
    for i, cv in enumerate(("diag_uniform", "scaled", "rotated_diag")):
        b = _eval_batch(cfg, train_prior, n_shift, covariates=cv, seed_offset=200 + i)
        covs[cv] = evaluate_seeds(model, params, b, train_prior, baselines=False)
    fig, axes = new_figure(1, 3, figsize=(14, 3.6))
    for name, rl in tasks.items():
        r = rl[0]
        k = np.arange(T)
        l, = axes[0].plot(k, r["model_true_sigma"]["sigma_ratio"], label=f"{name} model")
        axes[0].plot(k, r["false_prior_bayes"]["sigma_ratio"], ls="--", color=l.get_color(),
                     label=f"{name} false-prior Bayes")
        axes[1].plot(k, r["model"]["coverage"], color=l.get_color(), label=name)
        axes[2].plot(k, r["model"]["mse"] / r["bayes"]["mse"], color=l.get_color(), label=name)
    axes[0].set_title("sigma_hat / true sigma (seed 0)")
    axes[1].set_title("model 90% coverage")
    axes[2].set_title("model MSE / true-prior Bayes MSE")
    for ax in axes:
        ax.set_xlabel("context length k")
    axes[0].legend(fontsize=6)
    axes[1].legend(fontsize=7)
    fig_ts = save_figure(fig, out_dir, "icl_task_shift")
    lo = tasks["L-OOD"]
    fb_ratio = lo[0]["false_prior_bayes"]["sigma_ratio"]   # Bayes: the same for every seed
    md_last = [float(r["model_true_sigma"]["sigma_ratio"][-1]) for r in lo]
    below = paired_ci(np.full(S, float(fb_ratio[-1])), md_last)
    ok = bool(fb_ratio[-1] > fb_ratio[0] and below.excludes_zero(">"))
    claims.append(Claim(NAME, "Under L-OOD task shift the false-prior Bayes sigma moves "
                        "toward the truth as k grows while the transformer's stays too "
                        "small (it does not do Bayesian inference out of distribution)",
                        {"false_prior_bayes_ratio_k0": float(fb_ratio[0]),
                         "false_prior_bayes_ratio_last": float(fb_ratio[-1]),
                         "model_ratio_last": float(np.mean(md_last))},
                        "Bayes ratio increases in k and 95% CI of Bayes ratio - model "
                        "ratio (last k) > 0", ok, fig_ts,
                        {"scale": scale, "eval_tasks": n_shift, "model_ratio_last": md_last,
                         "coverage_avg": {kk: [_avg(r["model"], "coverage") for r in v]
                                          for kk, v in tasks.items()},
                         "mse_ratio_avg": {kk: [_avg(r["model"], "mse") / _avg(r["bayes"], "mse")
                                                for r in v] for kk, v in tasks.items()}},
                        **ci_fields(below)))
    cov_ratio = {kk: [_avg(r["model"], "mse") / _avg(r["bayes"], "mse") for r in v]
                 for kk, v in covs.items()}
    cov_gap = {kk: [_avg(r["model"], "nll") - _avg(r["bayes"], "nll") for r in v]
               for kk, v in covs.items()}
    fig, axes = new_figure(1, 2, figsize=(10, 3.6))
    for name, rl in covs.items():
        axes[0].plot(rl[0]["model"]["mse"] / rl[0]["bayes"]["mse"], label=name)
        axes[1].plot(rl[0]["model"]["nll"] - rl[0]["bayes"]["nll"], label=name)
    axes[0].set_title("model / Bayes MSE (seed 0)")
    axes[1].set_title("model - Bayes NLL (seed 0)")
    axes[0].legend(fontsize=7)
    fig_cs = save_figure(fig, out_dir, "icl_covariate_shift")
    cs_iv, cs_ok = _ci_le(cov_ratio["diag_uniform"], COV_SHIFT_MSE_RATIO)
    claims.append(Claim(NAME, "Covariate shift x ~ N(0, diag(c)), c_i ~ U[0,2]: the "
                        "transformer stays near Bayes (which conditions on x)",
                        cs_iv.mean, f"95% CI of model/Bayes MSE <= {COV_SHIFT_MSE_RATIO}",
                        cs_ok, fig_cs,
                        {"scale": scale, "mse_ratio": cov_ratio, "nll_gap": cov_gap},
                        **ci_fields(cs_iv),
                        note="scaled (x2) and rotated-diag covariates reported in details, "
                             "no target"))

    # 3. Prompt-length shift: loss on the first half, evaluate on all positions.
    half = T // 2
    pl = {}
    d_sub = _sub_config(cfg, quick).dim
    sub_ev = icl.sample_batch(jax.random.key(cfg.eval_seed + 400), cfg.eval_tasks, T,
                              d_sub, prior)
    trained = {}    # reuse identical sub-configs (pool P = inf is window S = T)
    for pe in ("learned", "none"):
        c = _sub_config(cfg, quick, pos_encoding=pe, train_length=half)
        mdl, prm, _, _ = _train_seeds(c, runs / f"length_{pe}", S)
        rl = evaluate_seeds(mdl, prm, sub_ev, prior, baselines=False)
        per_pos = [r["model"]["mse"] / r["bayes"]["mse"] for r in rl]
        pl[pe] = {"mse_ratio_seen": [float(np.mean(q[:half])) for q in per_pos],
                  "mse_ratio_unseen": [float(np.mean(q[half:])) for q in per_pos],
                  "mse_ratio_per_position_seed0": per_pos[0]}
    sub_scale = (f"{c.n_layer}x{c.n_head}x{c.n_embd}, {c.num_steps} steps, batch "
                 f"{c.batch_size}, d={d_sub}, T={T}, {S} seeds"
                 + (" (quick sweep scale)" if quick else ""))
    fig, ax = new_figure(figsize=(6, 3.6))
    for pe, v in pl.items():
        ax.plot(v["mse_ratio_per_position_seed0"], label=f"{pe} positional encoding (seed 0)")
    ax.axvline(half - 0.5, color="k", ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("position k (loss only left of the line)")
    ax.set_ylabel("model / Bayes MSE")
    ax.legend()
    fig_pl = save_figure(fig, out_dir, "icl_prompt_length")
    pl_iv = paired_ci(pl["learned"]["mse_ratio_unseen"], pl["none"]["mse_ratio_unseen"])
    claims.append(Claim(NAME, "Prompt-length shift (train on the first half of positions): "
                        "without positional encoding the model extrapolates to longer "
                        "prompts better than with learned positions",
                        {pe: float(np.mean(v["mse_ratio_unseen"])) for pe, v in pl.items()},
                        "paired 95% CI of learned - none (model/Bayes MSE on unseen "
                        "positions) > 0", pl_iv.excludes_zero(">"), fig_pl,
                        {"scale": sub_scale, "train_length": half, **pl},
                        **ci_fields(pl_iv)))

    # 4. Pool size: ICL vs in-weight learning.
    pools = (8, 0) if quick else (1024, 4096, 16384, 65536, 0)
    fresh = icl.sample_batch(jax.random.key(cfg.eval_seed + 300), 1000, T, d_sub, prior)
    ps = {}
    for P in pools:
        c = _sub_config(cfg, quick, pool_size=P,
                        **({"num_steps": QUICK_POOL_STEPS} if quick else {}))
        mdl, prm, _, pool = _train_seeds(c, runs / f"pool_{P or 'inf'}", S)
        if not P:
            trained["full"] = (mdl, prm)
        rf = evaluate_seeds(mdl, prm, fresh, prior, baselines=False)
        row = {"fresh_mse_ratio_to_bayes": [_avg(r["model"], "mse") / _avg(r["bayes"], "mse")
                                            for r in rf]}
        if pool is not None:
            pb = icl.sample_batch(jax.random.key(cfg.eval_seed + 301), 1000, T, d_sub,
                                  pool=pool)
            rp = evaluate_seeds(mdl, prm, pb, prior, pool=pool, baselines=False)
            row.update(pool_tasks_model_mse=[_avg(r["model"], "mse") for r in rp],
                       pool_tasks_pool_bayes_mse=_avg(rp[0]["pool_bayes"], "mse"),
                       pool_tasks_ng_bayes_mse=_avg(rp[0]["bayes"], "mse"))
        ps["inf" if not P else str(P)] = row
    pool_scale = (f"{c.n_layer}x{c.n_head}x{c.n_embd}, {c.num_steps} steps, batch "
                  f"{c.batch_size}, d={d_sub}, T={T}, {S} seeds"
                  + (" (quick sweep scale)" if quick else ""))
    small = ps[str(pools[0])]
    fresh_iv = paired_ci(small["fresh_mse_ratio_to_bayes"], ps["inf"]["fresh_mse_ratio_to_bayes"])
    inw_iv = paired_ci(np.full(S, small["pool_tasks_ng_bayes_mse"]),
                       small["pool_tasks_model_mse"])
    ok = fresh_iv.excludes_zero(">") and inw_iv.excludes_zero(">")
    fig, ax = new_figure(figsize=(6, 3.6))
    labels = list(ps)
    ax.bar(labels, [np.mean(ps[k]["fresh_mse_ratio_to_bayes"]) for k in labels],
           yerr=[np.std(ps[k]["fresh_mse_ratio_to_bayes"], ddof=1) for k in labels])
    ax.axhline(1.0, color="k", ls=":")
    ax.set_xlabel("pool size P")
    ax.set_ylabel(f"fresh-task MSE / NG-Bayes MSE (mean +- sd, {S} seeds)")
    fig_pool = save_figure(fig, out_dir, "icl_pool_size")
    weaker = fresh_iv if fresh_iv.low < inw_iv.low else inw_iv
    claims.append(Claim(NAME, "Small task pools give in-weight learning (beats NG-Bayes on "
                        "pool tasks, worse than the P = inf model on fresh tasks); large "
                        "pools give in-context learning",
                        {k: float(np.mean(v["fresh_mse_ratio_to_bayes"])) for k, v in ps.items()},
                        f"P={pools[0]}: paired 95% CIs of fresh ratio - P=inf ratio > 0 and "
                        "of NG-Bayes - model MSE on pool tasks > 0", bool(ok), fig_pool,
                        {"scale": pool_scale, "per_pool": ps,
                         "fresh_ratio_minus_inf": fresh_iv.text(),
                         "ng_bayes_minus_model_on_pool_tasks": inw_iv.text()},
                        **ci_fields(weaker),
                        note="CI columns: the weaker of the two paired differences"))

    # 5. Context window S (sliding-window attention).
    windows = (2, 0) if quick else (5, 10, 25, 50, 0)
    late = slice(T // 2, T)
    ws = {}
    for Sw in windows:
        if not Sw and "full" in trained:
            mdl, prm = trained["full"]
        else:
            c = _sub_config(cfg, quick, window=Sw,
                            **({"num_steps": QUICK_POOL_STEPS} if quick else {}))
            mdl, prm, _, _ = _train_seeds(c, runs / f"window_{Sw or 'full'}", S)
        rl = evaluate_seeds(mdl, prm, sub_ev, prior, baselines=False)
        wb = icl.normal_gamma_predictive(sub_ev["xs"], sub_ev["ys"], prior, window=Sw or None)
        wbm = icl.uq_metrics(wb["mean"], wb["var"], sub_ev["ys"])
        ws[str(Sw or T)] = {"late_mse": [float(np.mean(r["model"]["mse"][late])) for r in rl],
                            "late_window_bayes_mse": float(np.mean(wbm["mse"][late])),
                            "late_full_bayes_mse": float(np.mean(rl[0]["bayes"]["mse"][late])),
                            "min_S_T": min(Sw or T, T)}
    keys_w = list(ws)
    steps_w = [paired_ci(ws[a]["late_mse"], ws[b]["late_mse"])
               for a, b in zip(keys_w, keys_w[1:])]
    ok = bool(all(iv.excludes_zero(">") for iv in steps_w))
    weakest = min(steps_w, key=lambda iv: iv.low)
    fig, ax = new_figure(figsize=(6, 3.6))
    xs_ = [ws[k]["min_S_T"] for k in ws]
    ax.errorbar(xs_, [np.mean(ws[k]["late_mse"]) for k in ws],
                yerr=[np.std(ws[k]["late_mse"], ddof=1) for k in ws], fmt="o-",
                label=f"model (mean +- sd, {S} seeds)")
    ax.plot(xs_, [ws[k]["late_window_bayes_mse"] for k in ws], "s--",
            label="Bayes seeing the last S pairs")
    ax.set_xlabel("context window min(S, T)")
    ax.set_ylabel(f"MSE at positions >= {T // 2}")
    ax.legend()
    fig_w = save_figure(fig, out_dir, "icl_context_window")
    claims.append(Claim(NAME, "Context window S: late-position MSE decreases with the "
                        "window, like Bayes restricted to the last S pairs",
                        {k: float(np.mean(v["late_mse"])) for k, v in ws.items()},
                        "paired 95% CI of late MSE(smaller S) - late MSE(next larger S) > 0 "
                        "for every step", ok, fig_w,
                        {"scale": pool_scale, "per_window": ws,
                         "steps": [iv.text() for iv in steps_w]},
                        **ci_fields(weakest),
                        note="depth widens the receptive field beyond S pairs; CI columns: "
                             "the weakest step"))
    for c in claims:
        c.details.setdefault("total_seconds", time.perf_counter() - t_start)
    return claims
