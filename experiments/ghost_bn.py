"""Reproduction: closing the generalization gap of large-batch training
(Hoffer, Hubara & Soudry 2017) on scikit-learn digits.

Five runs of the "F1" MLP (Dense+BN+ReLU blocks), SGD momentum 0.9, weight
decay 1e-4, gradient clipping at 5, several seeds vmapped in one compiled step:

  SB                 small batch B_S, the base regime
  LB                 large batch B_L, same epochs and learning rates
  LB+sqrtLR          every learning rate * sqrt(B_L / B_S)
  LB+sqrtLR+GBN      ... with ghost batch norm, ghost size B_S
  LB+sqrtLR+GBN+RA   ... and "train longer": epochs and drops * B_L / B_S

Seed ``s`` uses the same initial weights in every run (paired runs); the batch
order is a pure function of ``seed`` (shared by the seeds). Each run goes through
the shared ``train_and_evaluate`` loop (metrics.jsonl with the per-layer weight
distance at every step, checkpoints, resume) in ``<workdir>/runs/<run>``.
With ``budget_variant_epochs`` set (the full preset: 10) the five runs are
repeated with that short epoch budget and the held-out base key ``variant_seed``
(``<workdir>/ghost_bn_runs_<E>ep``), and the five gap claims are reported again,
labelled "[E-epoch budget]": at 120 epochs the large batch fits the training set
and the gap left is too small for 450 test images (issue 13, item 3). The claims'
targets below are fixed before anything runs (from the spec / paper).
"""

from __future__ import annotations

import functools
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from gapjax import report
from gapjax.config import check_config
from gapjax.data import batch_at, load_digits
from gapjax.ghost_bn import (BNMLP, Regime, adapt_regime, correlation, cross_entropy,
                             log_fit, lr_boundaries, make_optimizer, total_updates,
                             weight_distance)
from gapjax.train import Task, train_and_evaluate

NAME = "ghost_bn"
RUNS = ("SB", "LB", "LB+sqrtLR", "LB+sqrtLR+GBN", "LB+sqrtLR+GBN+RA")

# ---- targets, written before the run ----------------------------------------
# Seed s starts every run from the same initial weights, so runs are compared
# by the paired per-seed difference of test accuracy, with its 95% Student-t
# interval over the seeds (gapjax.report.paired_ci).
# 1. A generalization gap exists:            CI of acc(SB) - acc(LB) > 0
# 2-4. Each step of the recipe shrinks it:   CI of acc(+sqrtLR) - acc(LB) > 0,
#      CI of acc(+GBN) - acc(+sqrtLR) > 0, CI of acc(+GBN+RA) - acc(+GBN) > 0
#      (paper F1/MNIST 99.31 SB, 99.09 LB, 99.21 +sqrtLR, 99.27 +GBN, 99.35 +RA).
#      Issue 13 replaced the earlier targets ("> 0" / ">= 0" on the means,
#      whatever the spread) by the interval rule before any full run.
# 5. Regime adaptation closes it: the remaining gap SB - RA is at most
#    CLOSE_FRACTION of the original gap SB - LB, per seed: the CI of
#    (SB - RA) - CLOSE_FRACTION (SB - LB) lies below 0. One-sided: RA may exceed
#    SB, as in the paper. (Replaces "SB - RA <= 2 SE", whose margin shrank with
#    the seed count, issue 13.)
# 6. ||w_t - w_0|| ~ log t in the initial high-LR phase (first layer, SB run):
#    Pearson r of the fit a + b log t on the seed-mean curve >= 0.95, and log t
#    fits better than sqrt t (ordinary random-walk diffusion): the per-seed
#    CI of r(log t) - r(sqrt t) > 0.
# Equivalence margin of claim 5: the paper's remaining gaps after regime
# adaptation are -0.04 pts of a 0.22-pt gap (F1/MNIST, -18%) and -0.24 of 6.73
# (ResNet44/CIFAR-10, -4%); "closes the gap" is read as "at most a quarter of
# the gap remains".
CLOSE_FRACTION = 0.25
LOG_FIT_MIN_R = 0.95
DIST_LAYER = "Dense_0"  # the official code logs parameter 0: the first Linear


def _regimes(cfg) -> dict[str, tuple[Regime, int | None]]:
    e = float(cfg.epochs)
    lrs = [(0.0, cfg.lr)] + [(f * e, cfg.lr * cfg.lr_decay ** (i + 1))
                             for i, f in enumerate(cfg.lr_drop_fractions)]
    sb = Regime(batch_size=cfg.small_batch, epochs=e, lr=tuple(lrs), momentum=cfg.momentum,
                weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm)
    lb = cfg.large_batch
    return {
        "SB": (sb, None),
        "LB": (adapt_regime(sb, lb, sqrt_lr=False), None),
        "LB+sqrtLR": (adapt_regime(sb, lb, sqrt_lr=True), None),
        "LB+sqrtLR+GBN": (adapt_regime(sb, lb, sqrt_lr=True), cfg.small_batch),
        "LB+sqrtLR+GBN+RA": (adapt_regime(sb, lb, sqrt_lr=True, longer=True), cfg.small_batch),
    }


def _log_steps(total: int, num: int) -> np.ndarray:
    return np.unique(np.round(np.logspace(0, math.log10(total), num)).astype(int))


def _train_accuracy_fn(cfg):
    # Inference uses the running statistics only, so the ghost size is irrelevant.
    eval_model = BNMLP(features=tuple(cfg.features), momentum=cfg.bn_momentum)

    @jax.jit
    @functools.partial(jax.vmap, in_axes=(0, 0, None, None))
    def accuracy(params, batch_stats, x, y):
        logits = eval_model.apply({"params": params, "batch_stats": batch_stats}, x,
                                  train=False)
        return jnp.mean(jnp.argmax(logits, -1) == y)

    return accuracy


def train_run(cfg, regime: Regime, ghost: int | None, data, workdir) -> dict:
    """Trains ``cfg.seeds`` vmapped seeds of one run through the shared
    :func:`gapjax.train.train_and_evaluate` loop (``metrics.jsonl``, checkpoint,
    ``summary.json`` in ``workdir``; resumable with ``cfg.resume``).

    The initial weights ride along as the collection ``"w0"`` so that every
    step logs the per-layer distance ``||w_t - w_0||`` (``dist/<layer>``).
    """
    (xtr, ytr), (xte, yte) = data
    n = xtr.shape[0]
    model = BNMLP(features=tuple(cfg.features), ghost_batch_size=ghost,
                  momentum=cfg.bn_momentum, running_stats=cfg.running_stats)
    tx = make_optimizer(regime, n)
    updates = total_updates(regime, n)
    if updates < 1:
        raise ValueError(f"the regime {regime} makes no update on {n} examples; "
                         "increase epochs")
    bs = regime.batch_size
    arrays = (jnp.asarray(xtr), jnp.asarray(ytr))
    accuracy = _train_accuracy_fn(cfg)

    def init_fn(k):
        v = dict(model.init(k, jnp.zeros((bs, xtr.shape[1]), jnp.float32)))
        return {**v, "w0": v["params"]}

    def loss_fn(params, coll, batch, key):
        logits, new = model.apply({"params": params, "batch_stats": coll["batch_stats"]},
                                  batch[0], mutable=["batch_stats"])
        dist = weight_distance(params, coll["w0"])
        return cross_entropy(logits, batch[1]), (
            {**coll, **new}, {f"dist/{k}": v for k, v in dist.items()})

    def eval_fn(params, coll, batch):
        logits = model.apply({"params": params, "batch_stats": coll["batch_stats"]},
                             batch[0], train=False)
        return {"acc": jnp.mean(jnp.argmax(logits, -1) == batch[1])}

    task = Task(init_fn=init_fn, loss_fn=loss_fn, tx=tx,
                batch_fn=lambda key, t: batch_at(key, t, arrays, bs),
                eval_fn=eval_fn, eval_batches=lambda: [(xte, yte)])
    run_cfg = dict(seed=cfg.seed, num_steps=updates, log_every=1, eval_every=0,
                   checkpoint_every=cfg.checkpoint_every, keep_checkpoints=2,
                   resume=cfg.resume, num_seeds=cfg.seeds, num_devices=cfg.num_devices,
                   progress=cfg.progress)
    t0 = time.perf_counter()
    state, summary = train_and_evaluate(task, run_cfg, workdir)
    seconds = time.perf_counter() - t0
    rows = [json.loads(ln) for ln in (pathlib.Path(workdir) / "metrics.jsonl")
            .read_text().splitlines() if ln.strip()]
    rows = {r["step"]: r for r in rows if r["split"] == "train"}
    log_at = [t for t in _log_steps(updates, cfg.num_distance_points) if t in rows]
    layers = sorted(k[len("dist/"):] for k in rows[updates] if k.startswith("dist/"))
    bstats = state.collections["batch_stats"]
    return {
        "batch_size": bs, "ghost_batch_size": ghost, "epochs": regime.epochs,
        "lr": [list(p) for p in regime.lr], "updates": updates,
        "lr_drop_steps": lr_boundaries(regime, n)[0],
        "test_acc": np.asarray(summary["eval"]["acc"]),
        "num_test": int(xte.shape[0]),
        "train_acc": np.asarray(accuracy(state.params, bstats, arrays[0], arrays[1])),
        "final_train_loss": np.asarray(rows[updates]["loss"]),
        "distance_steps": np.asarray(log_at),
        "distance": {k: np.asarray([rows[t][f"dist/{k}"] for t in log_at]).T
                     for k in layers},
        "seconds": seconds,
    }


def _mean_std(a) -> tuple[float, float]:
    a = np.asarray(a, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def run_all(cfg, workdir) -> dict:
    """All five runs (each in ``workdir/runs/<name>``); ``{run_name: measurements}``."""
    tr, te = load_digits(flat=True, test_fraction=cfg.test_fraction, seed=cfg.data_seed)
    data = ((tr.x, tr.y), (te.x, te.y))
    if cfg.large_batch % cfg.small_batch:
        raise ValueError(f"large_batch={cfg.large_batch} must be a multiple of "
                         f"small_batch={cfg.small_batch} (= ghost_batch_size)")
    runs = pathlib.Path(workdir) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    return {name: train_run(cfg, reg, ghost, data, runs / name.replace("+", "_"))
            for name, (reg, ghost) in _regimes(cfg).items()}


def _weight_fit(res: dict, layer: str = DIST_LAYER, seed: int | None = None) -> dict:
    """Log-t fit of the distance of ``layer`` over the initial phase: the
    seed-mean curve (``seed=None``) or one seed's curve."""
    t = res["distance_steps"]
    d = res["distance"][layer]
    d = d.mean(0) if seed is None else d[seed]
    first_drop = res["lr_drop_steps"][0] if res["lr_drop_steps"] else res["updates"] + 1
    sel = t < first_drop
    fit = log_fit(t[sel], d[sel])
    fit["r_sqrt"] = correlation(np.sqrt(t[sel]), d[sel])
    fit["points"] = int(sel.sum())
    fit["phase_end_step"] = int(first_drop)
    return fit


def _pts(iv: report.Interval) -> str:
    return iv.text(".2f", scale=100).replace(" seeds)", " seeds) pts")


def claims_from(results: dict, cfg, out_dir, variant: str = "") -> list[report.Claim]:
    """The report rows of one set of five runs. ``variant`` (e.g. "10-epoch
    budget") labels the fixed-budget variant's rows, which carry the five gap
    claims only (the log-t claim is about the main run's long initial phase)."""
    tag = f"[{variant}] " if variant else ""
    slug = f"_{int(cfg.epochs)}ep" if variant else ""
    acc = {k: np.asarray(results[k]["test_acc"], np.float64) for k in RUNS}
    ms = {k: _mean_std(v) for k, v in acc.items()}
    fmt = {k: f"{100 * m:.2f} ± {100 * s:.2f}" for k, (m, s) in ms.items()}
    common = {"test_acc_mean_std_pct": fmt,
              "updates": {k: results[k]["updates"] for k in RUNS},
              "train_acc_mean": {k: float(np.mean(results[k]["train_acc"])) for k in RUNS},
              "seeds": int(cfg.seeds), "small_batch": int(cfg.small_batch),
              "large_batch": int(cfg.large_batch), "epochs_SB": float(cfg.epochs),
              "features": list(cfg.features), "preset": cfg.preset}
    fig_acc = _plot_acc(results, out_dir, slug, variant)
    rows = []
    n_test = int(results["SB"].get("num_test", 0)) or None
    one_image = f"; one test image = {100 / n_test:.2f} pts" if n_test else ""
    train = {k: float(np.mean(results[k]["train_acc"])) for k in RUNS}
    fitted = (f"; train accuracy SB {100 * train['SB']:.2f} %, LB {100 * train['LB']:.2f} % "
              f"after {results['LB']['updates']} LB updates")

    iv = report.paired_ci(acc["SB"], acc["LB"])
    ok = iv.excludes_zero(">")
    rows.append(report.Claim(
        NAME, tag + "Large batch generalizes worse than small batch (the gap)",
        measured=f"SB {fmt['SB']} vs LB {fmt['LB']} %: SB - LB {_pts(iv)}",
        target="95% CI of the paired SB - LB > 0", passed=ok, figure=fig_acc,
        details={**common, "per_seed_test_acc": acc}, **report.ci_fields(iv),
        note="" if ok else f"the paired gap's interval {_pts(iv)} reaches 0{one_image}"
                           f"{fitted}"))
    steps = [("LB", "LB+sqrtLR", "sqrt(B_L/B_S) learning-rate scaling"),
             ("LB+sqrtLR", "LB+sqrtLR+GBN", "ghost batch norm (ghost size B_S)"),
             ("LB+sqrtLR+GBN", "LB+sqrtLR+GBN+RA", "regime adaptation (train longer)")]
    for a, b, what in steps:
        iv = report.paired_ci(acc[b], acc[a])
        ok = iv.excludes_zero(">")
        per_seed = 100 * (acc[b] - acc[a])
        note = "" if ok else (
            f"paired difference {_pts(iv)}: the interval includes 0 (per-seed "
            f"differences {np.round(per_seed, 2).tolist()} pts{one_image}); the "
            f"step's effect is below what {iv.n} seeds resolve at this scale"
            + (" (the paper's own GBN gain on F1/MNIST is +0.06 pts)" if "GBN" in what
               else ""))
        rows.append(report.Claim(
            NAME, f"{tag}Adding {what} shrinks the gap: acc({b}) > acc({a})",
            measured=f"{fmt[b]} vs {fmt[a]} %: {_pts(iv)}",
            target="95% CI of the paired difference > 0", passed=ok, figure=fig_acc,
            details={"paired_per_seed_diff_pts": per_seed,
                     "updates": {a: results[a]["updates"], b: results[b]["updates"]}},
            **report.ci_fields(iv), note=note))
    ra = "LB+sqrtLR+GBN+RA"
    excess = (acc["SB"] - acc[ra]) - CLOSE_FRACTION * (acc["SB"] - acc["LB"])
    iv = report.mean_ci(excess)
    ok = iv.excludes_zero("<")
    gap_iv = report.paired_ci(acc["SB"], acc[ra])
    rows.append(report.Claim(
        NAME, tag + "Regime adaptation closes the gap: acc(SB) - acc(LB+sqrtLR+GBN+RA) "
              f"at most {CLOSE_FRACTION:g} of the SB - LB gap",
        measured=f"SB {fmt['SB']} vs RA {fmt[ra]} %: SB - RA {_pts(gap_iv)}",
        target=f"95% CI of (SB - RA) - {CLOSE_FRACTION:g} (SB - LB) < 0 (margin from "
               "the paper's remaining gaps, -18% and -4%)",
        passed=ok, figure=fig_acc,
        details={"updates": {"SB": results["SB"]["updates"], ra: results[ra]["updates"]},
                 "excess_over_margin_pts": _pts(iv),
                 "per_seed_SB_minus_RA_pts": 100 * (acc["SB"] - acc[ra])},
        **report.ci_fields(iv),
        note="" if ok else f"(SB - RA) - {CLOSE_FRACTION:g} (SB - LB) = {_pts(iv)}: "
                           "the remaining gap is not shown below the margin"))
    if variant:
        return rows
    fig_dist = _plot_distance(results, out_dir)
    fit = _weight_fit(results["SB"])
    seeds = results["SB"]["distance"][DIST_LAYER].shape[0]
    per_seed = [_weight_fit(results["SB"], seed=i) for i in range(seeds)]
    iv = report.mean_ci([f["r"] - f["r_sqrt"] for f in per_seed])
    dense = [k for k in results["SB"]["distance"] if k.startswith("Dense_")]
    ok = fit["r"] >= LOG_FIT_MIN_R and iv.excludes_zero(">")
    note = "" if ok else (
        f"over the {fit['phase_end_step']} updates of the initial phase "
        f"({fit['points']} log-spaced points) the distance grows "
        + ("faster than log t: sqrt t fits better (r(log t) - r(sqrt t) "
           f"{iv.text('.4f')})" if iv.mean <= 0 else
           f"r(log t) - r(sqrt t) {iv.text('.4f')} does not exclude 0"
           if fit["r"] >= LOG_FIT_MIN_R else
           f"irregularly: r(log t) {fit['r']:.4f} < {LOG_FIT_MIN_R}")
        + ("; the quick preset's phase is short: in the full preset's SB run "
           "(2016-update phase, recorded in experiments/results/full/ghost_bn/"
           "sb_initial_phase.md) the first 84 updates are sqrt-like too (r 0.912 vs "
           "0.989) while log t fits the whole phase (0.964 vs 0.845)"
           if cfg.preset == "quick" else ""))
    rows.append(report.Claim(
        NAME, f"||w_t - w_0|| grows like log t in the initial high-LR phase "
              f"(SB, {DIST_LAYER}, t < {fit['phase_end_step']})",
        measured=f"seed-mean r(log t) = {fit['r']:.4f}, r(sqrt t) = {fit['r_sqrt']:.4f}; "
                 f"per seed r(log t) - r(sqrt t) = {iv.text('.4f')}",
        target=f"r(log t) >= {LOG_FIT_MIN_R} and 95% CI of r(log t) - r(sqrt t) > 0",
        passed=ok, figure=fig_dist,
        details={**fit, "per_seed": per_seed,
                 "SB_per_layer": {k: _weight_fit(results["SB"], k) for k in dense},
                 "RA_run": _weight_fit(results[ra])},
        **report.ci_fields(iv), note=note))
    return rows


def _plot_acc(results, out_dir, slug: str = "", variant: str = "") -> str:
    fig, ax = report.new_figure(figsize=(7, 3.6))
    means = [100 * np.mean(results[k]["test_acc"]) for k in RUNS]
    stds = [100 * np.std(results[k]["test_acc"], ddof=1) for k in RUNS]
    ax.bar(range(len(RUNS)), means, yerr=stds, capsize=4,
           color=["C0", "C3", "C1", "C2", "C4"])
    for i, k in enumerate(RUNS):
        ax.scatter(np.full(len(results[k]["test_acc"]), i),
                   100 * np.asarray(results[k]["test_acc"]), s=8, color="k", zorder=3)
    ax.set_xticks(range(len(RUNS)), [f"{k}\n({results[k]['updates']} upd.)" for k in RUNS],
                  fontsize=7)
    lo = min(100 * np.min(results[k]["test_acc"]) for k in RUNS)
    ax.set_ylim(max(0.0, lo - 2), 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits: test accuracy, mean ± std over seeds"
                 + (f" ({variant})" if variant else ""))
    return report.save_figure(fig, out_dir, "ghost_bn_test_accuracy" + slug)


def _plot_distance(results, out_dir) -> str:
    fig, ax = report.new_figure(figsize=(6, 3.6))
    for i, k in enumerate(RUNS):
        t = results[k]["distance_steps"]
        d = results[k]["distance"][DIST_LAYER]
        ax.plot(t, d.mean(0), label=k, color=f"C{[0, 3, 1, 2, 4][i]}")
    fit = _weight_fit(results["SB"])
    t = results["SB"]["distance_steps"]
    t = t[t < fit["phase_end_step"]]
    ax.plot(t, fit["a"] + fit["b"] * np.log(t), "k--", lw=1,
            label=f"SB fit a + b log t (r={fit['r']:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("update t")
    ax.set_ylabel(f"||w_t - w_0|| ({DIST_LAYER})")
    ax.legend(fontsize=7)
    return report.save_figure(fig, out_dir, "ghost_bn_weight_distance")


def _runs_summary(results) -> dict:
    runs = {}
    for k, r in results.items():
        runs[k] = {kk: v for kk, v in r.items() if kk != "distance"}
        runs[k]["distance_" + DIST_LAYER] = r["distance"][DIST_LAYER]
        runs[k]["weight_fit_initial_phase"] = _weight_fit(r) if r["lr_drop_steps"] and \
            r["lr_drop_steps"][0] > 3 else None
    return runs


def _summary(results, claims, cfg, seconds, variant=None) -> dict:
    out = {"config": cfg.to_dict(), "seconds": seconds, "runs": _runs_summary(results),
           "claims": [c.to_json() for c in claims]}
    if variant is not None:
        out["budget_variant"] = {"epochs": variant[0], "seed": variant[1],
                                 "runs": _runs_summary(variant[2])}
    return report._jsonable(out)


def budget_variant_config(cfg):
    """The fixed-epoch-budget variant: ``cfg`` with ``epochs =
    budget_variant_epochs`` and the held-out base key ``variant_seed``."""
    v = cfg.copy_and_resolve_references()
    v.epochs, v.seed = int(cfg.budget_variant_epochs), int(cfg.variant_seed)
    v.budget_variant_epochs = None
    return v


def run(out_dir: pathlib.Path, quick: bool = True) -> list[report.Claim]:
    """The reproduction report rows (figures under ``out_dir/figures``)."""
    from gapjax.configs.ghost_bn import get_config

    out_dir = pathlib.Path(out_dir)
    summary, claims = _execute(get_config("quick" if quick else "full"), out_dir)
    (out_dir / "ghost_bn.json").write_text(json.dumps(summary, indent=1))
    return claims


def _execute(cfg, out_dir: pathlib.Path):
    t0 = time.perf_counter()
    results = run_all(cfg, out_dir / "ghost_bn_runs")
    claims = claims_from(results, cfg, out_dir)
    variant = None
    if cfg.get("budget_variant_epochs"):
        vcfg = budget_variant_config(cfg)
        vres = run_all(vcfg, out_dir / f"ghost_bn_runs_{vcfg.epochs}ep")
        claims += claims_from(vres, vcfg, out_dir, variant=f"{vcfg.epochs}-epoch budget")
        variant = (vcfg.epochs, vcfg.seed, vres)
    summary = _summary(results, claims, cfg, time.perf_counter() - t0, variant)
    return summary, claims


def main(config, workdir) -> dict:
    """``python -m gapjax.run ghost_bn``: trains the five runs (``workdir/runs/*``
    with metrics.jsonl and checkpoints; ``--resume`` continues them), writes
    ``workdir/ghost_bn.json`` and figures under ``workdir/figures``."""
    check_config("ghost_bn", config)  # every value checked before any work
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    summary, _ = _execute(config, workdir)
    # one metric stream for the whole workdir: every run's rows tagged with it
    with open(workdir / "metrics.jsonl", "w") as out:
        for name in RUNS:
            path = workdir / "ghost_bn_runs" / "runs" / name.replace("+", "_") / "metrics.jsonl"
            for line in path.read_text().splitlines():
                if line.strip():
                    out.write(json.dumps({"run": name, **json.loads(line)}) + "\n")
    (workdir / "ghost_bn.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    import sys

    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ghost_bn_report")
    t = time.perf_counter()
    for c in run(out, quick="--full" not in sys.argv):
        print(("PASS" if c.passed else "FAIL"), "|", c.claim, "|", c.measured, "|", c.target)
    print(f"{time.perf_counter() - t:.1f} s")
