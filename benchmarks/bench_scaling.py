"""Benchmark: Monte Carlo of experiment 1 (delta vs k) -- gapjax vs an official-style loop.

Setting (official BLR_non_zero_T.py): d = 10, n = 1e4, sigma = 1e-4, gamma = 1e-3,
T/(2 sigma^2) = 10, k = 1..99, 100 trials per test point, 10^6 test points.

* ``numpy_loop``: NumPy float64 port of the official ``compute_means_for_pair``
  (Python loop ``for k in range(1, Kmax+1)``: draw, weight, running sums, record
  the trial mean at every k), one judge c per run, test points in batches of 1000.
* ``gapjax``: :func:`gapjax.scaling.delta_monte_carlo` (jit, fused scan over the
  sample index, streamed test points), float64, one c; and all three c at once
  (common random numbers). The official script also runs a second Monte Carlo
  per c for the DE curve; gapjax replaces it by quadrature
  (``experiment1_*`` fields compare the whole experiment).

Both sides run in one process on the same machine; throughput is measured on a
subset of test points (warm-up/compile excluded, median of repeats) and
extrapolated to 10^6 points; ``--full`` also times gapjax on all 10^6 points.

The three timed units alternate round by round (``benchmarks._harness.compare``);
per-round paired speed-ups per test point and the load average are recorded.

Run: ``python -m benchmarks.bench_scaling --out FILE.json [--size full|quick|tiny]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import gapjax.scaling as gs  # noqa: E402
from benchmarks import _harness as H  # noqa: E402

D, N, SIGMA, GAMMA, S = 10, 10_000, 1e-4, 1e-3, 1.0
T = 10 * 2 * SIGMA**2
KMAX, TRIALS, CS = 99, 100, (5.0, 10.0, 15.0)
OFFICIAL_POINTS = 1_000_000
SIZES = {"full": dict(numpy_points=2000, jax_points=8192, rounds=3, kmax=KMAX),
         "quick": dict(numpy_points=500, jax_points=2048, rounds=3, kmax=KMAX),
         "tiny": dict(numpy_points=20, jax_points=64, rounds=2, kmax=5)}


def numpy_loop(mean, std, mR, mT, temp, kmax, num_trials, rng, batch=1000):
    """Official-style estimator (Python loop over k), float64 NumPy."""
    out = np.zeros(kmax)
    for b0 in range(0, mean.shape[0], batch):
        m, s, r, t = (a[b0:b0 + batch, None] for a in (mean, std, mR, mT))
        Bt = m.shape[0]
        cum_w = np.zeros((Bt, num_trials))
        cum_num = np.zeros((Bt, num_trials))
        errs = np.zeros((Bt, kmax))
        for k in range(1, kmax + 1):
            eps = rng.standard_normal((Bt, num_trials))
            samples = m + s * eps
            weight = np.exp(-((samples - r) ** 2) / temp)
            diff_sq = (samples - t) ** 2
            cum_w += weight
            cum_num += diff_sq * weight
            errs[:, k - 1] = (cum_num / cum_w).mean(axis=1)
        out += errs.sum(axis=0)
    return out / mean.shape[0]


def run(size: str = "full", *, full_points: bool = False, **overrides) -> dict:
    load_before = H.load_1min()
    args = argparse.Namespace(**{**SIZES[H.check_size(size)], **overrides})
    kmax = args.kmax
    key = jax.random.key(0)
    w = np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (D,))) * 2.0
    X, y = gs.sample_training_data(jax.random.fold_in(key, 2), jax.numpy.asarray(w), N, S,
                                   SIGMA)
    post = gs.fit_posterior(X, y, SIGMA, GAMMA)
    ks = np.arange(1, kmax + 1)

    # --- NumPy official-style loop (one c) on a subset of test points.
    rng = np.random.default_rng(0)
    xt = rng.standard_normal((args.numpy_points, D)) * S / np.sqrt(D)
    mean = xt @ np.asarray(post.mean)
    std = np.sqrt(SIGMA**2 + np.sum((xt @ np.asarray(post.cov)) * xt, axis=1))
    mT = xt @ w
    mR = mT - CS[-1] * (mean - mT)
    numpy_loop(mean[:100], std[:100], mR[:100], mT[:100], T, kmax, TRIALS, rng)  # warm-up

    # --- gapjax: one c, and three c at once (common random numbers).
    def run_jax(cs, points):
        m, _ = gs.delta_monte_carlo(key, post, w, cs, ks, [T], num_test=points,
                                    num_trials=TRIALS, S=S, chunk_size=256,
                                    with_coefficients=False)
        jax.block_until_ready(m)
        return m

    r = H.compare({"numpy_loop": lambda: numpy_loop(mean, std, mR, mT, T, kmax, TRIALS, rng),
                   "gapjax_one_c": lambda: run_jax(CS[-1], args.jax_points),
                   "gapjax_three_c": lambda: run_jax(CS, args.jax_points)},
                  rounds=args.rounds)
    per_point = lambda row, k: row[k] / (args.numpy_points if k == "numpy_loop"
                                         else args.jax_points)
    paired = [per_point(row, "numpy_loop") / per_point(row, "gapjax_one_c")
              for row in r["rounds"]]
    np_per_point = r["median_s"]["numpy_loop"] / args.numpy_points
    results = {"one_c": r["median_s"]["gapjax_one_c"] / args.jax_points,
               "three_c": r["median_s"]["gapjax_three_c"] / args.jax_points}
    # DE curves by quadrature (the official code runs a second Monte Carlo for them).
    R = float(gs.renormalized_ridge(D / N, S, SIGMA, GAMMA))

    def de_curves():
        for c in CS:
            nodes = gs.de_nodes(c, D / N, S, SIGMA, GAMMA, float(w @ w), D, num_mu=32,
                                num_chi=1)
            jax.block_until_ready(gs.softmax_error_averaged(nodes, [T], ks, num_t=512,
                                                            num_rho=48))
    de_curves()
    t_de = H.compare({"de": de_curves}, rounds=args.rounds, warmup=0)["median_s"]["de"]
    out = {
        "benchmark": "scaling", "size": size,
        "setting": dict(d=D, n=N, sigma=SIGMA, gamma=GAMMA, T=T, kmax=kmax, trials=TRIALS,
                        dtype="float64"),
        "timing": r, "speedup_one_c_per_point": {"rounds": paired,
                                                 "median": statistics.median(paired)},
        "numpy_loop_seconds_per_point_one_c": np_per_point,
        "gapjax_seconds_per_point_one_c": results["one_c"],
        "gapjax_seconds_per_point_three_c": results["three_c"],
        "speedup_one_c": np_per_point / results["one_c"],
        "speedup_three_c_vs_three_numpy_runs": 3 * np_per_point / results["three_c"],
        "extrapolated_official_seconds": {
            "numpy_loop_three_c": 3 * np_per_point * OFFICIAL_POINTS,
            "gapjax_three_c": results["three_c"] * OFFICIAL_POINTS},
        # Experiment 1 as the official script does it: per c, a simulation MC and a
        # DE MC (6 loops) vs one 3-c MC + DE quadrature.
        "experiment1_official_style_seconds": 6 * np_per_point * OFFICIAL_POINTS,
        "experiment1_gapjax_seconds": results["three_c"] * OFFICIAL_POINTS + t_de,
        "experiment1_speedup": 6 * np_per_point * OFFICIAL_POINTS
        / (results["three_c"] * OFFICIAL_POINTS + t_de),
        "de_quadrature_seconds_three_c": t_de,
        "numpy_points": args.numpy_points, "jax_points": args.jax_points,
        "rounds": args.rounds,
        "torch": "not needed (NumPy port of the official loop)",
    }
    if full_points:
        t0 = time.perf_counter()
        run_jax(CS, OFFICIAL_POINTS)
        out["gapjax_full_official_seconds_three_c"] = time.perf_counter() - t0
    out["environment"] = H.environment(load_before)
    return out


def main():
    H.reexec_with_huge_pages()   # as python -m gapjax.run (GAPJAX_HUGE_PAGES=0: off)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--size", default="full", choices=H.SIZES)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--full", action="store_true", help="also time gapjax on 10^6 points")
    a = ap.parse_args()
    H.write(run(a.size, full_points=a.full, **({"rounds": a.rounds} if a.rounds else {})),
            a.out)


if __name__ == "__main__":
    main()
