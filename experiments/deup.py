"""DEUP reproduction: 1D toy, sequential model optimisation, digits OOD.

``run(out_dir, quick=True)`` returns the report's claims; ``main(config,
workdir)`` is the ``python -m gapjax.run deup`` entry (see configs/deup.py).
Targets below are fixed before anything runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

from gapjax import deup as D
from gapjax.config import check_config
from gapjax.report import Claim, ci_fields, mean_ci, new_figure, paired_ci, save_figure

NAME = "deup"

# ---- targets (spec / paper), written before the run -----------------------
TOY_NEAR_ZERO_ABS = 0.01        # mean u on training intervals <= sigma^2 (= 0.01)
TOY_RATIO = 10.0                # gap / outside mean u >= 10 x training-interval mean u
TOY_SPEARMAN = 0.5              # Spearman(u, true excess risk) on the grid > 0.5
# Every stochastic claim is measured over config seeds (toy / digits: fresh
# initialisations, and toy data, per seed; SMO: one initial design and candidate
# stream per seed shared by all methods, so comparisons are paired) and judged on
# the 95% Student-t interval (gapjax.report.mean_ci / paired_ci): "A beats B"
# needs the interval of A - B above 0; thresholds need the whole interval on the
# right side.
#
# SMO "DEUP-EI not worse than GP-EI": equivalence margin on the paired mean
# final regret difference regret(DEUP) - regret(GP), whose upper 95% bound must
# stay below it. The margin is half the gap between the global optimum and the
# best other local optimum of the objective (dense grid, closed form:
# multi_optima 0.9499 vs 0.7752; Levy N.13 0 vs 0.1099), so a method that settles
# in a non-global basin on a sizeable share of seeds cannot pass. Written on
# 2026-12-02 before the 10-seed runs; it replaces the earlier "<= 2 SE" rule,
# which passed Levy N.13 with a 100x regret gap (2.17 vs 0.02) only because the
# 3-seed SE was wide (issue 13).
SMO_EQUIV_MARGIN = {"multi_optima": 0.0874, "levy_n13": 0.0549}
DIGITS_MARGIN = 0.0             # Spearman(u, loss) - baselines' Spearman: CI above 0


def _spearman(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 3 or a.shape != b.shape:
        # the official OOD script computed Spearman on an empty list; refuse instead
        raise ValueError(f"Spearman needs >= 3 paired values, got {a.shape} and {b.shape}")
    return float(spearmanr(a, b).correlation)


# =========================================================================
# 1. 1D toy
# =========================================================================

def toy_mu(x):
    """Noise-free toy function (the official introduction figure's oracle)."""
    x = jnp.asarray(x)
    spiky = 3.0 / 5.0 * (jnp.sin(x) * jnp.cos(5 * x) * jnp.cos(22 * x) * -3 * jnp.sin(7 * x)
                         * jnp.cos(19 * x) * 4 * jnp.sin(11 * x))
    return jnp.where((x > 0.5) & (x < 1.5), spiky, jnp.sin(2 * jnp.pi * x))


def _toy_data(c, key):
    kx, kn, kh, khn = jax.random.split(key, 4)
    n = int(c.n_train)
    x = jnp.concatenate([jax.random.uniform(kx, (n // 2, 1), minval=0.0, maxval=0.5),
                         jax.random.uniform(jax.random.fold_in(kx, 1), (n - n // 2, 1),
                                            minval=1.5, maxval=2.0)])
    y = toy_mu(x[:, 0]) + c.noise_std * jax.random.normal(kn, (n,))
    m = int(c.n_out_each)
    hk = jax.random.split(kh, 3)
    xh = jnp.concatenate([jax.random.uniform(hk[0], (m, 1), minval=-0.25, maxval=0.0),
                          jax.random.uniform(hk[1], (m, 1), minval=2.0, maxval=2.25),
                          jax.random.uniform(hk[2], (int(c.n_gap), 1), minval=0.5,
                                             maxval=1.5)])
    yh = toy_mu(xh[:, 0]) + c.noise_std * jax.random.normal(khn, (xh.shape[0],))
    return x, y, xh, yh


def _toy_case(c, hidden, data, key, axes, title):
    """DEUP + ensemble + MC-dropout with main-network widths ``hidden``."""
    x, y, xh, yh = data
    n = x.shape[0]
    sig2 = float(c.noise_std) ** 2
    kd, kens = jax.random.split(key)
    fmlp = D.MLPConfig(hidden=tuple(hidden), steps=int(c.f_steps), lr=float(c.lr),
                       activation=c.activation)
    cfg = D.DEUPConfig(
        predictor=D.Predictor(fmlp),
        error=D.ErrorConfig(D.MLPConfig(hidden=tuple(c.e_hidden), steps=int(c.e_steps),
                                        lr=float(c.lr), activation=c.activation),
                            target="log"),
        features=D.FeatureConfig(use_x=bool(c.use_x), density=True, distance=True),
        num_folds=int(c.num_folds))
    state = D.fit_deup(cfg, kd, x, y, holdout_x=xh, holdout_y=yh)
    D.check_no_leakage(state.error_data)
    grid = jnp.linspace(-0.5, 2.5, int(c.grid))[:, None]
    mu_grid = toy_mu(grid[:, 0])
    pred, e, _ = D.deup_predict(cfg, state, grid)
    u = np.asarray(D.epistemic_uncertainty(e, sig2))
    true_eu = np.asarray(jnp.square(pred - mu_grid))
    # Baselines with the same architecture and training: a deep ensemble and an
    # MC-dropout net; each variance is scored against its own model's excess risk
    # (and, in details, against f's).
    ens_p = D.Predictor(fmlp, num_members=int(c.ensemble_members))
    mc_p = D.Predictor(dataclasses.replace(fmlp, dropout=float(c.dropout)),
                       mc_samples=int(c.mc_samples))

    @jax.jit
    def baselines(k):
        w = jnp.ones((n,))
        ens = D.fit_predictor(ens_p, k, x, y, w)
        mc = D.fit_predictor(mc_p, jax.random.fold_in(k, 1), x, y, w)
        return (D.predict(ens_p, ens, grid),
                D.predict(mc_p, mc, grid, jax.random.fold_in(k, 2)))

    (ens_mean, ens_lv), (mc_mean, mc_lv) = baselines(kens)
    ens_var, mc_var = np.exp(np.asarray(ens_lv)), np.exp(np.asarray(mc_lv))
    ens_eu = np.asarray(jnp.square(ens_mean - mu_grid))
    mc_eu = np.asarray(jnp.square(mc_mean - mu_grid))
    g = np.asarray(grid[:, 0])
    on_train = ((g >= 0) & (g <= 0.5)) | ((g >= 1.5) & (g <= 2.0))
    gap = (g > 0.5) & (g < 1.5)
    outside = (g < 0) | (g > 2)
    r = {"hidden": list(hidden),
         "mean_u": {"train": float(u[on_train].mean()), "gap": float(u[gap].mean()),
                    "outside": float(u[outside].mean())},
         "mean_true_eu": {"train": float(true_eu[on_train].mean()),
                          "gap": float(true_eu[gap].mean()),
                          "outside": float(true_eu[outside].mean())},
         "rho_deup": _spearman(u, true_eu),
         "rho_ensemble": _spearman(ens_var, ens_eu),
         "rho_ensemble_vs_f_eu": _spearman(ens_var, true_eu),
         "rho_mc_dropout": _spearman(mc_var, mc_eu),
         "rho_mc_dropout_vs_f_eu": _spearman(mc_var, true_eu)}
    if axes is None:  # seeds after the first are not plotted
        return r
    ax0, ax1 = axes
    ax0.plot(g, np.asarray(mu_grid), "k--", lw=1, label="mu(x)")
    ax0.plot(np.asarray(x[:, 0]), np.asarray(y), ".", ms=1.5, color="0.6", label="train")
    ax0.plot(np.asarray(xh[:, 0]), np.asarray(yh), "rx", ms=4, label="held-out (e only)")
    ax0.plot(g, np.asarray(pred), "b", lw=1.2, label="f(x)")
    ax0.set_ylim(-3, 3)
    ax0.set_title(title, fontsize=9)
    ax0.legend(fontsize=6, ncol=2)
    ax1.semilogy(g, true_eu + 1e-6, "k", lw=1, label="true EU (f-mu)^2")
    ax1.semilogy(g, u + 1e-6, "b", lw=1.2, label=f"DEUP u (rho={r['rho_deup']:.2f})")
    ax1.semilogy(g, ens_var + 1e-6, "g", lw=1,
                 label=f"ensemble var (rho={r['rho_ensemble']:.2f})")
    ax1.semilogy(g, mc_var + 1e-6, "m", lw=1,
                 label=f"MC-dropout var (rho={r['rho_mc_dropout']:.2f})")
    ax1.axhline(sig2, color="0.5", ls=":", lw=1, label="sigma^2")
    ax1.legend(fontsize=6)
    ax1.set_xlabel("x")
    return r


def toy_experiment(out_dir, c, key) -> list[Claim]:
    """The 1D toy over ``c.seeds`` seeds (fresh data and initialisations each)."""
    t0 = time.time()
    fig, ax = new_figure(2, 2, figsize=(13, 6.5), sharex=True)
    flex, mis = [], []
    for s in range(int(c.seeds)):
        kdata, k1, k2 = jax.random.split(jax.random.fold_in(key, s), 3)
        data = _toy_data(c, kdata)
        first = s == 0
        flex.append(_toy_case(c, c.f_hidden, data, k1, ax[:, 0] if first else None,
                              f"flexible f: MLP {tuple(c.f_hidden)} (seed 0)"))
        mis.append(_toy_case(c, c.misspecified_hidden, data, k2, ax[:, 1] if first else None,
                             f"misspecified f: MLP {tuple(c.misspecified_hidden)} (seed 0)"))
    fig_path = save_figure(fig, out_dir, "deup_toy1d")
    settings = {"seeds": int(c.seeds), "n_train": int(c.n_train),
                "n_holdout": 2 * int(c.n_out_each) + int(c.n_gap),
                "noise_std": float(c.noise_std), "f_steps": int(c.f_steps),
                "e_steps": int(c.e_steps), "num_folds": int(c.num_folds),
                "features": "x, " * bool(c.use_x) + "log-density, distance",
                "ensemble_members": int(c.ensemble_members), "dropout": float(c.dropout),
                "mc_samples": int(c.mc_samples), "seconds": round(time.time() - t0, 1)}
    u_train = mean_ci([r["mean_u"]["train"] for r in flex])
    # per seed, log10 of the smaller of the gap and outside ratios to the
    # training-interval u. (The first 5-seed run, 2026-12-02, took the interval of
    # the ratio itself: per-seed ratios 596..4068 gave [-1189, 6571], a t-interval
    # of a heavy-tailed ratio that says nothing; the target, ratio >= 10, is
    # unchanged, judged on the log scale.)
    ratio = mean_ci([math.log10(min(r["mean_u"]["gap"], r["mean_u"]["outside"])
                                / max(r["mean_u"]["train"], 1e-12)) for r in flex])
    rho_u = mean_ci([r["rho_deup"] for r in flex])
    d_ens = paired_ci([r["rho_deup"] for r in mis], [r["rho_ensemble"] for r in mis])
    d_mc = paired_ci([r["rho_deup"] for r in mis], [r["rho_mc_dropout"] for r in mis])
    weaker = d_ens if d_ens.low < d_mc.low else d_mc
    per_seed_flex = [{k: r[k] for k in ("mean_u", "rho_deup", "rho_ensemble",
                                         "rho_mc_dropout")} for r in flex]
    per_seed_mis = [{k: r[k] for k in ("rho_deup", "rho_ensemble", "rho_mc_dropout",
                                        "rho_ensemble_vs_f_eu", "rho_mc_dropout_vs_f_eu")}
                    for r in mis]
    mean_u = {k: float(np.mean([r["mean_u"][k] for r in flex]))
              for k in ("train", "gap", "outside")}
    return [
        Claim(NAME, "1D toy (flexible f): EU ~ 0 on the training intervals, high in the gap "
              "and outside [0, 2] (mean u per region, mean over seeds)",
              measured=mean_u,
              target=f"95% CI of train u <= {TOY_NEAR_ZERO_ABS} (= sigma^2) and of "
                     f"log10(min(gap, outside) / train) >= log10({TOY_RATIO})",
              passed=bool(u_train.high <= TOY_NEAR_ZERO_ABS
                          and ratio.low >= math.log10(TOY_RATIO)),
              figure=fig_path, **ci_fields(ratio),
              details={**settings, "train_u_ci": u_train.text(),
                       "min_ratio_ci": ratio.text(), "per_seed": per_seed_flex},
              note="CI columns: log10(min(gap, outside) / train) of mean u; the interval "
                   "was first taken of the ratio itself (disclosed in the module); "
                   f"train u per seed {[round(r['mean_u']['train'], 4) for r in flex]}, "
                   f"95% CI {u_train.text()}"),
        Claim(NAME, "1D toy (flexible f): Spearman(u, true excess risk (f-mu)^2) on a dense "
              "grid", measured=rho_u.mean, target=f"95% CI > {TOY_SPEARMAN}",
              passed=rho_u.low > TOY_SPEARMAN, figure=fig_path, **ci_fields(rho_u),
              details={**settings, "per_seed": [r["rho_deup"] for r in flex]}),
        Claim(NAME, "1D toy (misspecified f): DEUP's Spearman with the excess risk beats "
              "ensemble variance and MC-dropout variance",
              measured={"deup": float(np.mean([r["rho_deup"] for r in mis])),
                        "ensemble": float(np.mean([r["rho_ensemble"] for r in mis])),
                        "mc_dropout": float(np.mean([r["rho_mc_dropout"] for r in mis]))},
              target="paired 95% CIs of rho(deup) - rho(ensemble) and rho(deup) - "
                     "rho(MC-dropout) > 0 (each vs its own model's EU)",
              passed=bool(d_ens.excludes_zero(">") and d_mc.excludes_zero(">")),
              figure=fig_path, **ci_fields(weaker),
              details={**settings, "deup_minus_ensemble": d_ens.text(),
                       "deup_minus_mc_dropout": d_mc.text(), "per_seed": per_seed_mis,
                       "flexible_case_for_comparison": per_seed_flex},
              note="CI columns: the weaker of the two paired differences; per seed "
                   f"rho(deup) - rho(ensemble) "
                   f"{[round(r['rho_deup'] - r['rho_ensemble'], 3) for r in mis]}, "
                   f"rho(deup) - rho(MC-dropout) "
                   f"{[round(r['rho_deup'] - r['rho_mc_dropout'], 3) for r in mis]}"),
    ]


# =========================================================================
# 2. Sequential model optimisation
# =========================================================================

def smo_experiment(out_dir, c, key) -> tuple[list[Claim], dict]:
    t0 = time.time()
    mlp = D.MLPConfig(hidden=(64, 64), steps=int(c.mlp_steps), lr=3e-3)
    deup_cfg = D.DEUPConfig(
        predictor=D.Predictor(mlp),
        error=D.ErrorConfig(D.MLPConfig(hidden=(32, 32), steps=int(c.mlp_steps), lr=3e-3),
                            target="log"),
        features=D.FeatureConfig(use_x=True, density=True, distance=True), num_folds=3)
    cfg = D.SMOConfig(n_init=int(c.n_init), n_steps=int(c.n_steps),
                      num_candidates=int(c.num_candidates), deup=deup_cfg,
                      refit_steps=int(c.refit_steps), gp_steps=int(c.gp_steps),
                      ensemble=D.Predictor(mlp, num_members=5))
    keys = jax.random.split(key, int(c.seeds))
    claims, raw = [], {}
    fig, axes = new_figure(1, 2, figsize=(11, 4))
    for ax, obj in zip(axes, (D.MULTI_OPTIMA, D.LEVY_N13)):
        res, smo_x = {}, {}
        for method in D.METHODS:
            out = D.run_smo_seeds(method, obj, cfg, keys)
            res[method] = np.asarray(out["best"], np.float64)  # (S, T+1)
            smo_x[method] = out["x"]
            if method == "deup":
                D.check_no_leakage(jax.tree.map(lambda a: a[0], out["error_data"]))
                ua, ub = np.asarray(out["u_acq"]), np.asarray(out["u_acq_after"])
                ok = np.isfinite(ub) & (ua > 0)
                drop = float(np.mean(ub[ok] < ua[ok])) if ok.any() else float("nan")
                # f's out-of-sample squared error at each acquisition (standardised
                # units) and the u that EI used there: (S, n_steps)
                acq_loss = np.asarray(out["error_data"].loss)[:, int(c.n_init):]
        raw[obj.name] = {m: v.tolist() for m, v in res.items()}
        steps = np.arange(res["deup"].shape[1])
        for method, col in zip(D.METHODS, ("b", "k", "g", "0.6")):
            mean = res[method].mean(0)
            se = res[method].std(0, ddof=1) / math.sqrt(res[method].shape[0])
            ax.plot(steps, mean, color=col, label=method)
            ax.fill_between(steps, mean - se, mean + se, color=col, alpha=0.15)
        ax.axhline(obj.optimum, color="r", ls=":", lw=1)
        ax.set_title(f"{obj.name} ({res['deup'].shape[0]} seeds)")
        ax.set_xlabel("acquisition step")
        ax.set_ylabel("best value found")
        ax.legend(fontsize=7)
        regret = {m: obj.optimum - v[:, -1] for m, v in res.items()}
        # paired over seeds: every method starts from the seed's initial design
        vs_gp = paired_ci(regret["deup"], regret["gp"])
        vs_rand = paired_ci(regret["random"], regret["deup"])
        margin = SMO_EQUIV_MARGIN[obj.name]
        not_worse = vs_gp.high <= margin
        better_rand = vs_rand.excludes_zero(">")
        final = {m: float(v[:, -1].mean()) for m, v in res.items()}
        # where the acquisitions went: distance of each acquisition to the nearest
        # earlier point (unit cube), and the seeds whose best value stays below the
        # best non-global local optimum (regret > the global-vs-next-optimum gap)
        xs = {m: np.asarray(smo_x[m]) for m in ("deup", "gp")}
        n0 = int(c.n_init)
        dist = {m: np.array([[np.min(np.linalg.norm(x[s, n0 + t] - x[s, :n0 + t], axis=-1))
                              for t in range(x.shape[1] - n0)] for s in range(x.shape[0])])
                for m, x in xs.items()}                       # (S, n_steps)
        near = {m: float(v.mean()) for m, v in dist.items()}
        # an acquisition "repeats" an observed point if it lies within 1e-3 of one
        # (noise-free objective: nothing new is learned there)
        repeat = {m: float(np.mean(v < 1e-3)) for m, v in dist.items()}
        rep = dist["deup"] < 1e-3
        loss_rep = float(np.median(acq_loss[rep])) if rep.any() else float("nan")
        u_rep = float(np.median(np.asarray(ua)[rep])) if rep.any() else float("nan")
        basin_gap = 2 * margin
        stuck = {m: int(np.sum(r > basin_gap)) for m, r in regret.items()}
        note = ""
        if not not_worse:
            note = (f"DEUP-EI ends below the best non-global local optimum (regret > "
                    f"{basin_gap:.3g}) on {stuck['deup']}/{regret['deup'].size} seeds, GP-EI on "
                    f"{stuck['gp']}/{regret['gp'].size}. {repeat['deup']:.0%} of DEUP-EI's "
                    f"acquisitions repeat an already observed point (GP-EI: "
                    f"{repeat['gp']:.0%}); f's squared error at the acquired points has "
                    f"median {float(np.median(acq_loss)):.3g} (standardised units), the u EI "
                    f"used there {float(np.median(ua)):.3g}. regret(random) - regret(DEUP): "
                    f"{vs_rand.text()}; the interval of regret(DEUP) - regret(GP) has "
                    f"half-width {(vs_gp.high - vs_gp.low) / 2:.3g} against the margin "
                    f"{margin}.")
            if repeat["deup"] >= 0.2 and repeat["deup"] > repeat["gp"]:
                note += (f" At the repeats f's squared error, i.e. its training residual, has "
                         f"median {loss_rep:.3g} and u {u_rep:.3g}: f (an MLP refitted for "
                         f"{int(c.refit_steps)} warm-started Adam steps per acquisition) does "
                         f"not fit the points it has, e learns from these rows that observed "
                         f"points carry a large error too, and EI keeps choosing the "
                         f"incumbent's local optimum instead of exploring.")
        claims.append(Claim(
            NAME, f"SMO {obj.name}: DEUP-EI not worse than GP-EI and better than random "
            f"search (final regret = optimum - best value found)",
            measured={"final_best": final,
                      "final_regret": {m: float(r.mean()) for m, r in regret.items()}},
            target=f"paired 95% CI of regret(DEUP) - regret(GP) <= {margin} (equivalence "
                   f"margin, half the global-vs-next-optimum gap) and of regret(random) - "
                   f"regret(DEUP) > 0",
            passed=bool(not_worse and better_rand), figure=None, **ci_fields(vs_gp),
            note=note,
            details={"seeds": int(c.seeds), "n_init": int(c.n_init), "n_steps": int(c.n_steps),
                     "num_candidates": int(c.num_candidates), "mlp_steps": int(c.mlp_steps),
                     "refit_steps": int(c.refit_steps), "gp_steps": int(c.gp_steps),
                     "deup_minus_gp_regret": vs_gp.text(),
                     "random_minus_deup_regret": vs_rand.text(),
                     "seeds_where_gp_beats_deup": int(np.sum(regret["deup"] > regret["gp"])),
                     "seeds_where_deup_beats_random": int(np.sum(
                         regret["deup"] < regret["random"])),
                     "seeds_below_next_best_local_optimum": stuck,
                     "mean_distance_acquisition_to_nearest_earlier_point": near,
                     "share_of_acquisitions_repeating_an_observed_point": repeat,
                     "deup_median_f_sq_error_at_repeats": loss_rep,
                     "deup_median_u_at_repeats": u_rep,
                     "deup_median_f_sq_error_at_acquisitions": float(np.median(acq_loss)),
                     "deup_median_u_at_acquisitions": float(np.median(ua)),
                     "optimum": obj.optimum, "equivalence_margin": margin,
                     "frac_acquired_points_whose_u_dropped_after_update": drop}))
    fig_path = save_figure(fig, out_dir, "deup_smo")
    claims = [Claim(**{**cl.__dict__, "figure": fig_path}) for cl in claims]
    for cl in claims:
        cl.details["seconds_all_smo"] = round(time.time() - t0, 1)
    return claims, raw


# =========================================================================
# 3. Digits OOD
# =========================================================================

def digits_experiment(out_dir, c, key) -> list[Claim]:
    from gapjax.data import load_digits

    t0 = time.time()
    train, test = load_digits(flat=True)
    held = np.asarray(c.held_out)
    keep = ~np.isin(train.y, held)
    x, y = jnp.asarray(train.x[keep]), jnp.asarray(train.y[keep])
    xt, yt = jnp.asarray(test.x), jnp.asarray(test.y)
    is_ood = np.isin(test.y, held)
    in_classes = np.setdiff1d(np.arange(10), held)
    # second fold assignment: held-in classes in groups of two -> class-OOD errors
    groups = {int(cl): i // 2 for i, cl in enumerate(in_classes)}
    class_folds = jnp.asarray([groups[int(v)] for v in np.asarray(y)], jnp.int32)
    n_groups = len(in_classes) // 2

    fmlp = D.MLPConfig(hidden=tuple(c.hidden), steps=int(c.steps), lr=3e-3,
                       dropout=float(c.dropout), weight_decay=1e-4)
    pred_cfg = D.Predictor(fmlp, task="classification", num_classes=10,
                           mc_samples=int(c.mc_samples))
    cfg = D.DEUPConfig(
        predictor=pred_cfg,
        error=D.ErrorConfig(D.MLPConfig(hidden=(64, 64), steps=int(c.e_steps), lr=3e-3),
                            target="log", log_correction=0.0),
        features=D.FeatureConfig(use_x=False, density=True, distance=True, variance=True),
        num_folds=int(c.num_folds))
    ens_cfg = D.MLPConfig(hidden=tuple(c.hidden), steps=int(c.steps), lr=3e-3,
                          weight_decay=1e-4)
    ens_pred = D.Predictor(ens_cfg, task="classification", num_classes=10,
                           num_members=int(c.ensemble_members))
    fit_ens = jax.jit(lambda k: D.fit_predictor(ens_pred, k, x, y, jnp.ones(y.shape)))
    feat_names = ["log_density", "distance", "mc_log_var"]
    seeds = []
    for s in range(int(c.seeds)):
        kd, kp, ke = jax.random.split(jax.random.fold_in(key, s), 3)
        state = D.fit_deup(cfg, kd, x, y, extra_folds=class_folds, num_extra_folds=n_groups)
        D.check_no_leakage(state.error_data)
        probs, e, mc_logvar = D.deup_predict(cfg, state, xt, key=kp)
        loss = np.asarray(D.loss_of(pred_cfg, probs, yt))
        u = np.asarray(D.epistemic_uncertainty(e, 0.0))  # clean labels: a = 0
        ens_probs, ens_logvar = D.predict(ens_pred, fit_ens(ke), xt)
        ens_loss = np.asarray(D.loss_of(ens_pred, ens_probs, yt))
        # mechanism: each input feature of e alone, e's ranking of its own training
        # rows, and the shift of the features between the error rows (fold models)
        # and the test queries (final model)
        phi_t = np.asarray(D.compute_features(cfg.features, xt, state.ref_x, state.ref_mask,
                                              mc_logvar))
        ed = state.error_data
        valid = np.asarray(ed.valid)
        phi_r = np.asarray(ed.phi)[valid]
        e_rows = np.asarray(D.predict_error(cfg.error, state.error, ed.phi))[valid]
        seeds.append({
            "rho_deup": _spearman(u, loss), "rho_mc_dropout": _spearman(np.asarray(mc_logvar), loss),
            "rho_ensemble": _spearman(np.asarray(ens_logvar), ens_loss),
            "rho_ensemble_vs_f_loss": _spearman(np.asarray(ens_logvar), loss),
            "rho_feature_alone": {n: _spearman(phi_t[:, k], loss)
                                  for k, n in enumerate(feat_names)},
            "rho_deup_held_in": _spearman(u[~is_ood], loss[~is_ood]),
            "rho_mc_dropout_held_in": _spearman(np.asarray(mc_logvar)[~is_ood], loss[~is_ood]),
            "rho_e_on_its_training_rows": _spearman(e_rows, np.asarray(ed.loss)[valid]),
            "rho_mc_var_on_error_rows": _spearman(phi_r[:, 2], np.asarray(ed.loss)[valid]),
            "feature_mean_error_rows": dict(zip(feat_names, phi_r.mean(0).tolist())),
            "feature_mean_test_held_in": dict(zip(feat_names, phi_t[~is_ood].mean(0).tolist())),
            "feature_mean_test_held_out": dict(zip(feat_names, phi_t[is_ood].mean(0).tolist())),
            "accuracy_held_in": float(np.mean(np.argmax(np.asarray(probs), -1)[~is_ood]
                                              == np.asarray(yt)[~is_ood])),
            "error_rows": int(valid.sum())})
        if s == 0:
            plots = (u, np.exp(np.asarray(mc_logvar)), np.exp(np.asarray(ens_logvar)), loss,
                     ens_loss)
    u, mc_var, ens_var, loss, ens_loss = plots
    r0 = seeds[0]
    fig, ax = new_figure(1, 3, figsize=(13, 3.8))
    for a_, val, name, rho in ((ax[0], u, "DEUP u", r0["rho_deup"]),
                               (ax[1], mc_var, "MC-dropout var", r0["rho_mc_dropout"]),
                               (ax[2], ens_var, "ensemble var", r0["rho_ensemble"])):
        lo = loss if name != "ensemble var" else ens_loss
        a_.scatter(val[~is_ood], lo[~is_ood], s=4, label="held-in classes")
        a_.scatter(val[is_ood], lo[is_ood], s=4, c="r", label=f"held-out {tuple(held)}")
        a_.set_xscale("log")
        a_.set_yscale("log")
        a_.set_xlabel(name)
        a_.set_ylabel("test log loss")
        a_.set_title(f"Spearman {rho:.3f} (seed 0)")
        a_.legend(fontsize=7)
    fig_path = save_figure(fig, out_dir, "deup_digits_ood")
    col = lambda k: [r[k] for r in seeds]
    d_mc = paired_ci(col("rho_deup"), col("rho_mc_dropout"))
    d_ens = paired_ci(col("rho_deup"), col("rho_ensemble"))
    weaker = d_ens if d_ens.low < d_mc.low else d_mc
    passed = bool(d_mc.low > DIGITS_MARGIN and d_ens.low > DIGITS_MARGIN)
    mean = lambda k: float(np.mean(col(k)))
    feat = {n: round(float(np.mean([r["rho_feature_alone"][n] for r in seeds])), 3)
            for n in feat_names}
    fm = lambda k, n: float(np.mean([r[k][n] for r in seeds]))
    note = ""
    if not passed:
        note = (f"mean over seeds: Spearman of e's inputs alone with the loss {feat}; DEUP "
                f"{mean('rho_deup'):.3f}; on held-in classes only DEUP "
                f"{mean('rho_deup_held_in'):.3f} vs MC-dropout "
                f"{mean('rho_mc_dropout_held_in'):.3f}; e ranks its own training rows at "
                f"{mean('rho_e_on_its_training_rows'):.3f} (the MC log-variance feature alone "
                f"at {mean('rho_mc_var_on_error_rows'):.3f}); the ensemble is scored against "
                f"its own (more accurate) model's loss: against f's loss "
                f"{mean('rho_ensemble_vs_f_loss'):.3f}. The error rows come from fold models "
                f"trained on less data, so their features sit elsewhere than the final "
                f"model's test queries (mean over rows / held-in / held-out test points: "
                + "; ".join(f"{n} {fm('feature_mean_error_rows', n):.3g} / "
                            f"{fm('feature_mean_test_held_in', n):.3g} / "
                            f"{fm('feature_mean_test_held_out', n):.3g}" for n in feat_names)
                + "): e ranks its own rows better than the MC variance does but loses "
                "to it on the test points it extrapolates to")
    return [Claim(
        NAME, "Digits (train on 8 classes, hold out 2): Spearman(u, log loss) on held-in + "
        "held-out test points beats ensemble and MC-dropout variance",
        measured={"deup": mean("rho_deup"), "mc_dropout": mean("rho_mc_dropout"),
                  "ensemble_vs_own_loss": mean("rho_ensemble"),
                  "ensemble_vs_f_loss": mean("rho_ensemble_vs_f_loss")},
        target=f"paired 95% CIs of rho(deup) - rho(mc_dropout) and rho(deup) - "
               f"rho(ensemble) > {DIGITS_MARGIN}",
        passed=passed, figure=fig_path, **ci_fields(weaker), note=note,
        details={"n_train": int(x.shape[0]), "n_test": int(xt.shape[0]),
                 "n_test_ood": int(is_ood.sum()), "held_out": held.tolist(),
                 "num_folds": int(c.num_folds), "class_group_folds": n_groups,
                 "steps": int(c.steps), "e_steps": int(c.e_steps),
                 "deup_minus_mc_dropout": d_mc.text(), "deup_minus_ensemble": d_ens.text(),
                 "per_seed": seeds, "seconds": round(time.time() - t0, 1)})]


# =========================================================================
# entry points
# =========================================================================

def _config(quick: bool):
    from gapjax.configs.deup import get_config

    return get_config("quick" if quick else "full")


def _run_all(config, out_dir):
    key = jax.random.key(int(config.seed))
    k1, k2, k3 = jax.random.split(key, 3)
    timings = {}
    t = time.time()
    claims = toy_experiment(out_dir, config.toy, k1)
    timings["toy"] = time.time() - t
    t = time.time()
    smo_claims, smo_raw = smo_experiment(out_dir, config.smo, k2)
    timings["smo"] = time.time() - t
    t = time.time()
    claims += smo_claims
    claims += digits_experiment(out_dir, config.digits, k3)
    timings["digits"] = time.time() - t
    return claims, smo_raw, timings


def run(out_dir: pathlib.Path, quick: bool = True) -> list[Claim]:
    """All DEUP claims (quick: the settings of ``configs/deup.py``'s quick preset)."""
    out_dir = pathlib.Path(out_dir)
    claims, _, _ = _run_all(_config(quick), out_dir)
    return claims


def main(config, workdir) -> dict:
    """``python -m gapjax.run deup`` entry: writes ``deup_results.json`` and figures."""
    check_config("deup", config)  # every value checked before any work
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    claims, smo_raw, timings = _run_all(config, workdir)
    result = {"claims": [cl.to_json() for cl in claims], "smo_best_per_step": smo_raw,
              "seconds": {k: round(v, 1) for k, v in timings.items()}}
    (workdir / "deup_results.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    import sys

    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/deup_report")
    t0, c0 = time.time(), time.process_time()
    for cl in run(out, quick=True):
        print(("PASS" if cl.passed else "FAIL"), cl.claim, cl.measured)
    print(f"wall {time.time() - t0:.1f}s, process CPU {time.process_time() - c0:.1f}s")
