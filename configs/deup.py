"""DEUP reproduction settings (1D toy, SMO, digits OOD).

Launch:
  python -m gapjax.run deup --config configs/deup.py --workdir /tmp/deup
  python -m gapjax.run deup --config configs/deup.py:full --workdir /tmp/deup_full
  python -m gapjax.run deup --config configs/deup.py --workdir /tmp/deup --config.smo.seeds=3

Presets (both: toy and digits over 5 seeds, SMO over 10 paired seeds):
  quick: 1000-step toy fits, SMO 30 acquisitions from 512 candidates, digits
         300 / 400 steps (f / e). The 2026-12-02 quick run took 353 CPU s.
  full:  the paper's SMO length (50 acquisitions; 1024 candidates; 10 seeds where
         the paper has 5), 2000-step toy fits, digits 600 / 1000 steps. Measured:
         164 s on 2026-12-03 (experiments/results/full/deup). What differs from
         the paper: candidates are a random set plus incumbent perturbations (the
         official code optimises EI with botorch restarts), e is an MLP on (x,
         log-density, distance) (the official SMO used a GP regressor on (x, GP
         variance)), and digits (8x8) stand in for the paper's image data sets.
"""

import ml_collections


def get_config(arg=None):
    """``arg``: ``"quick"`` (default; the report's CPU budget) or ``"full"``."""
    arg = (arg or "quick").lower()
    if arg not in ("quick", "full"):
        raise ValueError(f"config arg must be 'quick' or 'full', got {arg!r}")
    full = arg == "full"
    c = ml_collections.ConfigDict()
    c.quick = not full
    c.seed = 0

    # 1D toy (paper's introduction figure): x ~ U[0, .5] u U[1.5, 2], spikes on
    # (0.5, 1.5), sin(2 pi x) elsewhere, known noise std 0.1; 1024 training
    # points and 8 + 8 + 32 held-out points (the notebook's generate_data).
    c.toy = ml_collections.ConfigDict()
    c.toy.n_train = 1024
    c.toy.n_out_each = 8
    c.toy.n_gap = 32
    c.toy.noise_std = 0.1
    c.toy.num_folds = 5
    c.toy.f_hidden = (32, 32)
    # misspecified main predictor: too small to represent mu even on the data
    c.toy.misspecified_hidden = (4,)
    c.toy.f_steps = 2000 if full else 1000
    c.toy.e_hidden = (32, 32)
    c.toy.e_steps = 2000 if full else 1000
    c.toy.lr = 1e-2
    c.toy.activation = "silu"
    c.toy.use_x = True  # phi = (x, log-density, distance), the paper's "xd" + distance
    c.toy.ensemble_members = 5
    c.toy.dropout = 0.1
    c.toy.mc_samples = 50
    c.toy.grid = 512
    c.toy.seeds = 5  # fresh data + initialisations per seed (issue 13: >= 5 seeds)

    # SMO: multi_optima (1D) and Levy N.13 (2D); 6 initial points.
    c.smo = ml_collections.ConfigDict()
    c.smo.n_init = 6
    c.smo.n_steps = 50 if full else 30
    c.smo.seeds = 10  # one run is cheap: >= 10 paired seeds (issue 13)
    c.smo.num_candidates = 1024 if full else 512
    c.smo.gp_steps = 50 if full else 30  # warm-started marginal-likelihood steps
    c.smo.mlp_steps = 400      # fold models of the initial K-fold error data
    c.smo.refit_steps = 200    # warm-started Adam steps per acquisition

    # Digits: train on 8 classes, hold out 2.
    c.digits = ml_collections.ConfigDict()
    c.digits.held_out = (8, 9)
    c.digits.num_folds = 4
    c.digits.hidden = (128,)
    c.digits.steps = 600 if full else 300
    c.digits.e_steps = 1000 if full else 400
    c.digits.dropout = 0.2
    c.digits.mc_samples = 20
    c.digits.ensemble_members = 5
    c.digits.seeds = 5  # fresh initialisations per seed, same class split (paired)
    return c


# Checked by gapjax.config.validate at the start of experiments/deup.main.
CONSTRAINTS = dict(
    counts=("toy.n_train", "toy.num_folds", "toy.f_hidden", "toy.misspecified_hidden",
            "toy.f_steps", "toy.e_hidden", "toy.e_steps", "toy.ensemble_members",
            "toy.mc_samples", "toy.grid", "toy.seeds", "smo.n_init", "smo.n_steps",
            "smo.seeds", "smo.num_candidates", "smo.gp_steps", "smo.mlp_steps",
            "smo.refit_steps", "digits.num_folds", "digits.hidden", "digits.steps",
            "digits.e_steps", "digits.mc_samples", "digits.ensemble_members",
            "digits.seeds"),
    nonneg_counts=("seed", "toy.n_out_each", "toy.n_gap", "digits.held_out"),
    positive=("toy.noise_std", "toy.lr"),
    rates=("toy.dropout", "digits.dropout"),
    choices={"toy.activation": ("relu", "tanh", "silu", "gelu"),
             "digits.held_out": tuple(range(10))},
    relations=[(lambda c: c.toy.num_folds >= 2 and c.digits.num_folds >= 2,
                "toy.num_folds and digits.num_folds must be >= 2 (K-fold error data)")],
)
