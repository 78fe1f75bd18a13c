"""Inference-time scaling in BLR with a judge (gapjax.scaling) presets.

Launch:
  python -m gapjax.run scaling --config configs/scaling.py:quick --workdir /tmp/scaling_quick
  python -m gapjax.run scaling --config configs/scaling.py:full --workdir /tmp/scaling_full

Presets (both float64, official model: d = 10, S = 1, sigma = 1e-4,
gamma = 1e-3, ||w_T||^2 = d w_std^2 with w_std = 2):
  quick: the official grids (k = 1..99, c in {5, 10, 15}, n in {1..3} x 1e4,
         k = 50..199) with few Monte Carlo test points; < 1 CPU minute.
  full:  the official Monte Carlo sizes: 10^6 test points x 100 trials for
         experiment 1, 10^5 x 100 for experiments 2-3 (official BLR_zero_T uses
         10^5); CPU minutes.
"""

import ml_collections


def get_config(arg=None):
    arg = arg or "quick"
    if arg not in ("quick", "full"):
        raise ValueError(f"preset must be 'quick' or 'full', got {arg!r}")
    quick = arg == "quick"
    c = ml_collections.ConfigDict()
    c.preset = arg
    c.seed = 0
    # Model (official BLR_non_zero_T.py / BLR_zero_T.py).
    c.d = 10
    c.n = 10_000
    c.S = 1.0
    c.sigma = 1e-4
    c.gamma = 1e-3
    c.w_std = 2.0
    # Experiment 1: delta vs k at T / (2 sigma^2) = 10.
    c.exp1_t = 10.0
    c.exp1_cs = (5.0, 10.0, 15.0)
    c.exp1_kmax = 99
    c.exp1_num_test = 2048 if quick else 1_000_000
    c.exp1_trials = 100
    # Experiment 2: delta vs T at fixed k (largest misspecification).
    c.exp2_c = 15.0
    c.exp2_k = 50
    c.exp2_t_grid = (0.5, 200.0, 14)            # T/(2 sigma^2): geomspace(lo, hi, num)
    c.exp2_num_test = 512 if quick else 100_000
    c.exp2_trials = 100
    # Experiment 3: best-of-k (T = 0) vs the extreme-value law.
    c.exp3_ns = (10_000, 15_000, 20_000, 25_000, 30_000)
    c.exp3_kmin = 50
    c.exp3_kmax = 199
    c.exp3_num_test = 512 if quick else 100_000
    c.exp3_trials = 50 if quick else 100
    # Experiment 4: regime map (exact best-of-k with DE nodes).
    c.exp4_k = 1000
    c.exp4_n_grid = (2_000.0, 100_000.0, 9 if quick else 25)
    c.exp4_w_grid = (0.5, 8.0, 7 if quick else 17)
    c.exp4_boundary_w_std = 2.0
    # Quadrature sizes. num_x: trapezoid nodes over the test-point law (step
    # 0.125 std on [-8.5, 8.5]); Gauss-Hermite with 24 nodes was 0.9% off at
    # T/(2 sigma^2) = 0.5, c = 15 (a 5.5-sigma "miss" at full Monte Carlo size).
    c.num_x = 137
    c.num_t = 512
    c.num_rho = 48
    c.chunk_size = 256
    return c


# Checked by gapjax.config.validate at the start of experiments/scaling.main.
CONSTRAINTS = dict(
    counts=("d", "n", "exp1_kmax", "exp1_num_test", "exp1_trials", "exp2_k",
            "exp2_num_test", "exp2_trials", "exp3_ns", "exp3_kmin", "exp3_kmax",
            "exp3_num_test", "exp3_trials", "exp4_k", "num_x", "num_t", "num_rho",
            "chunk_size"),
    nonneg_counts=("seed",),
    positive=("S", "sigma", "gamma", "w_std", "exp1_t", "exp2_t_grid", "exp4_n_grid",
              "exp4_w_grid", "exp4_boundary_w_std"),
    finite=("exp1_cs", "exp2_c"),
    relations=[(lambda c: c.exp3_kmin <= c.exp3_kmax, "exp3_kmin must be <= exp3_kmax")] + [
        (lambda c, k=k: len(c[k]) == 3 and c[k][0] < c[k][1] and float(c[k][2]).is_integer(),
         f"{k} must be (lo, hi, num) with lo < hi and an integer num >= 1")
        for k in ("exp2_t_grid", "exp4_n_grid", "exp4_w_grid")],
)
