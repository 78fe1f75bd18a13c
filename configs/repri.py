"""RePRI transductive few-shot segmentation on digit scenes (Boudiaf et al. 2021).

Launch:
  python -m gapjax.run repri --config configs/repri.py:quick --workdir /tmp/repri
  python -m gapjax.run repri --config configs/repri.py:full --workdir /tmp/repri_full \
      --config.num_tasks=1000

``arg`` selects a preset: ``"quick"`` (default; the CI budget, one fold, one
seed, 200 tasks, a 300-step backbone) or ``"full"`` (the spec's protocol: all
5 folds, 5 seeds, 1000 tasks per fold and seed, a 2000-step backbone). A
second run in the same workdir restores each fold's backbone checkpoint
instead of retraining it.
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
    if preset == "quick":
        c.folds = (0,)
        c.seeds = (0,)
        c.num_tasks = 200
        c.num_steps = 300
    else:
        c.folds = (0, 1, 2, 3, 4)
        c.seeds = (0, 1, 2, 3, 4)
        c.num_tasks = 1000
        c.num_steps = 2000
    return c
