"""RePRI transductive few-shot segmentation on digit scenes (Boudiaf et al. 2021).

Launch:
  python -m gapjax.run repri --config configs/repri.py:quick --workdir /tmp/repri
  python -m gapjax.run repri --config configs/repri.py:full --workdir /tmp/repri_full \
      --config.num_tasks=1000

``arg`` selects a preset: ``"quick"`` (default; the CI budget, one fold, 5
seeds x 40 tasks, a 300-step backbone, per scale variant) or ``"full"`` (the
spec's protocol of all 5 folds and 5 seeds with 200 tasks per fold and seed
where the paper draws 1000, a 2000-step backbone, per scale variant). A second
run in the same workdir restores each fold's backbone checkpoint instead of
retraining it.

Why 200 tasks: issue 13 asks for a full run of at most about 2 hours on the
2-core CPU, and 1000 tasks did not fit (~0.36 s per task for all five methods
at 1 and 5 shots at load ~16 on 2026-12-02: 2 variants x 25 x 1000 tasks =
~5 h there, plus ~1.5 h of backbone training). The verdicts pair methods over
the 5 seeds, each seed's value a mean over 5 folds x 200 = 1000 tasks (the
paper's 1000 per fold give each seed a mean over 5000).
"""

import ml_collections


def get_config(arg=None):
    preset = arg or "quick"
    if preset not in ("quick", "full"):
        raise ValueError(f"config arg must be 'quick' or 'full', got {arg!r}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    # Scenes (gapjax.repri.SceneConfig).
    c.canvas = 32
    c.grid = 2
    c.digit_size = 14
    c.min_digits = 2
    c.max_digits = 3
    # Backbone (SegNet) and its base training through gapjax.train.
    c.widths = (32, 48, 48, 64)
    c.batch_size = 32
    c.learning_rate = 3e-3
    c.seed = 0                    # backbone init / batch order
    c.eval_batches = 2            # held-out base scenes (batches) for base mIoU
    c.resume = True               # reuse the checkpointed backbone if present
    c.num_devices = 1
    # Episodes and inference.
    c.shots = (1, 5)
    c.num_examples = 4            # tasks shown in the predictions figure
    # Scale variants (issue 13): min_scale of each (SceneConfig.min_scale); 1.0 is
    # the fixed-size benchmark, 0.3 shrinks each digit by U[0.3, 1] (support and
    # query object sizes then differ > 2x in ~43% of tasks, vs ~15% at 1.0).
    c.scale_variants = (1.0, 0.3)
    if preset == "quick":
        c.folds = (0,)
        c.seeds = (0, 1, 2, 3, 4)  # >= 5 seeds for the 95% intervals (issue 13)
        c.num_tasks = 40           # per seed (was 1 seed x 200 tasks)
        c.num_steps = 300
    else:
        c.folds = (0, 1, 2, 3, 4)
        c.seeds = (0, 1, 2, 3, 4)
        c.num_tasks = 200          # per fold and seed (the paper: 1000; see above)
        c.num_steps = 2000
    return c


# Checked by gapjax.config.validate at the start of experiments/repri.main.
CONSTRAINTS = dict(
    counts=("canvas", "grid", "digit_size", "min_digits", "max_digits", "widths",
            "batch_size", "eval_batches", "shots", "num_examples", "num_tasks",
            "num_devices"),
    nonneg_counts=("seed", "seeds", "folds"),
    positive=("learning_rate", "scale_variants"),
    choices={"folds": (0, 1, 2, 3, 4)},
    optional=("num_devices",),
    relations=[(lambda c: c.min_digits <= c.max_digits, "min_digits must be <= max_digits"),
               (lambda c: all(s <= 1 for s in c.get("scale_variants", ())),
                "scale_variants must be in (0, 1]")],
)
