"""Ghost Batch Normalization and the large-batch regime adaptation.

Hoffer, Hubara & Soudry, "Train longer, generalize better: closing the
generalization gap in large batch training of neural networks" (NeurIPS 2017).

Public API:
  * :class:`GhostBatchNorm` — linen BatchNorm over contiguous ghost batches
    (``ghost_batch_size=None`` is exactly ``flax.linen.BatchNorm``);
    :func:`num_ghost_batches`, :func:`ema_weights` (closed form of the per-ghost
    running-statistics updates).
  * :class:`Regime`, :func:`scale_lr` (``lr * sqrt(B_L/B_S)``),
    :func:`train_longer` (epochs and drops ``* B_L/B_S``), :func:`adapt_regime`,
    :func:`steps_per_epoch`, :func:`total_updates`, :func:`lr_boundaries`,
    :func:`lr_schedule`, :func:`make_optimizer` (clip 5 + weight decay + SGD
    momentum, the official optimizer).
  * :func:`weight_distance` (per-layer ``||w_t - w_0||``), :func:`log_fit`
    (``a + b log t`` and its ``r``), :func:`correlation`.
  * :class:`BNMLP` (the "F1" MLP with GBN), :func:`cross_entropy`.

Choices where the spec is silent:
  * Running variance is the biased per-ghost variance (as Flax stores it;
    PyTorch stores the unbiased one). Momentum is Flax's (0.99 default; the
    experiment uses 0.9 = PyTorch's default 0.1, as the official code does).
  * A batch not divisible by ``ghost_batch_size`` raises ValueError; the
    remainder rule is "pad + ``mask=``": statistics of each ghost over its
    unmasked entries, empty ghosts skipped by the running update.
  * ``running_stats="mean"`` follows Keras ``virtual_batch_size``: the mean of
    the ghost means and of the ghost (biased) variances, one EMA update.
  * Weight decay applies to every parameter (BN scale/bias too) and is added
    after clipping, as PyTorch's ``clip_grad_norm`` + ``SGD(weight_decay=...)``.
  * "Train longer" multiplies epochs by exactly ``B_L / B_S`` (the official code
    uses ``ceil``); updates match the small-batch run when both batch sizes
    divide the number of examples used per epoch.
"""

from gapjax.ghost_bn._gbn import GhostBatchNorm, ema_weights, num_ghost_batches
from gapjax.ghost_bn._models import BNMLP, cross_entropy
from gapjax.ghost_bn._regime import (Regime, adapt_regime, correlation, log_fit,
                                     lr_boundaries, lr_schedule, make_optimizer,
                                     scale_lr, steps_per_epoch, total_updates,
                                     train_longer, weight_distance)

__all__ = [
    "GhostBatchNorm", "ema_weights", "num_ghost_batches", "BNMLP", "cross_entropy",
    "Regime", "adapt_regime", "scale_lr", "train_longer", "steps_per_epoch",
    "total_updates", "lr_boundaries", "lr_schedule", "make_optimizer",
    "weight_distance", "log_fit", "correlation",
]
