"""K-fold out-of-sample error data: one vmapped jit vs a Python loop of jitted fits.

    python benchmarks/bench_deup.py --out bench_deup.json

Both sides compute the same K fold models (same keys and masks) and the same
rows; compile time is excluded (one warm-up call each), then the median of
several repeats (``block_until_ready``) is reported with the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from gapjax import deup as D


def _time(fn, repeats):
    jax.block_until_ready(fn())
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench_deup.json")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    key = jax.random.key(0)
    x = jax.random.uniform(key, (a.n, 1))
    y = jnp.sin(6 * x[:, 0]) + 0.1 * jax.random.normal(jax.random.fold_in(key, 1), (a.n,))
    pred = D.Predictor(D.MLPConfig(hidden=(32, 32), steps=a.steps, lr=1e-2))
    feats = D.FeatureConfig()
    fold = D.random_folds(jax.random.fold_in(key, 2), a.n, a.folds)
    kk = jax.random.fold_in(key, 3)

    vmapped = lambda: D.kfold_error_data(pred, feats, kk, x, y, fold, a.folds)[0].loss

    fit = jax.jit(lambda k, w: D.fit_predictor(pred, k, x, y, w))
    rows = jax.jit(lambda p, w: (jnp.square(D.predict(pred, p, x)[0] - y),
                                 D.compute_features(feats, x, x, w > 0)))
    keys = jax.random.split(kk, a.folds)

    def loop():
        loss = jnp.zeros((a.n,))
        for k in range(a.folds):
            w = (fold != k).astype(x.dtype)
            lk, _ = rows(fit(keys[k], w), w)
            loss = jnp.where(fold == k, lk, loss)
        return loss

    t_v = _time(vmapped, a.repeats)
    t_l = _time(loop, a.repeats)
    diff = float(jnp.max(jnp.abs(vmapped() - loop())))
    res = {"n": a.n, "folds": a.folds, "steps": a.steps, "vmapped_s": t_v, "loop_s": t_l,
           "loop_over_vmapped": t_l / t_v, "max_abs_loss_diff": diff,
           "devices": str(jax.devices()), "torch": "not compared (no PyTorch side)"}
    print(json.dumps(res, indent=1))
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
