"""K-fold out-of-sample error data: one vmapped jit vs a Python loop of jitted fits.

    python -m benchmarks.bench_deup --out FILE.json [--size full|quick|tiny] [--rounds R]

Both sides compute the same K fold models (same keys and masks) and the same
rows; compile time is excluded (one warm-up call each); the sides alternate
round by round (``benchmarks._harness.compare``) and each round's paired ratio
``loop / vmapped`` is recorded with the median and the load average.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks import _harness as H
from gapjax import deup as D

SIZES = {"full": dict(n=512, folds=5, steps=300, rounds=5),
         "quick": dict(n=512, folds=5, steps=300, rounds=3),
         "tiny": dict(n=32, folds=2, steps=3, rounds=2)}


def run(size: str = "full", **overrides) -> dict:
    load_before = H.load_1min()
    a = argparse.Namespace(**{**SIZES[H.check_size(size)], **overrides})
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

    r = H.compare({"vmapped": lambda: jax.block_until_ready(vmapped()),
                   "loop": lambda: jax.block_until_ready(loop())},
                  rounds=a.rounds, baseline="loop")
    diff = float(jnp.max(jnp.abs(vmapped() - loop())))
    res = {"benchmark": "deup", "size": size, "setting": vars(a), **r,
           "max_abs_loss_diff": diff, "torch": "not compared (no PyTorch side)"}
    res["environment"] = H.environment(load_before)
    return res


def main():
    H.reexec_with_huge_pages()   # as python -m gapjax.run (GAPJAX_HUGE_PAGES=0: off)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--size", default="full", choices=H.SIZES)
    ap.add_argument("--rounds", type=int)
    a = ap.parse_args()
    H.write(run(a.size, **({"rounds": a.rounds} if a.rounds else {})), a.out)


if __name__ == "__main__":
    main()
