"""The paper's "F1" fully connected network with (ghost) batch normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn

from gapjax._checks import as_float_array, check_int, check_labels, check_same_leading
from gapjax.ghost_bn._gbn import GhostBatchNorm


class BNMLP(nn.Module):
    """``[Dense -> BN -> ReLU] * len(features) -> Dense(num_classes)``.

    The official ``mnist_f1`` model (five 512-wide blocks, PyTorch ``Linear``
    with bias, ``BatchNorm1d``, ``ReLU``) with configurable widths. Every block's
    normalisation is a :class:`GhostBatchNorm`; ``ghost_batch_size=None`` makes it
    ordinary BatchNorm over the whole batch (``nn.BatchNorm``).

    Attributes:
      features: hidden widths.
      num_classes: logits.
      ghost_batch_size: ``B_S`` of every GBN layer, or None (plain BN).
      momentum: BN running-statistics momentum, Flax convention (0.9 = PyTorch's
        default 0.1).
      running_stats: ``"sequential"`` or ``"mean"`` (see GhostBatchNorm).
    """

    features: Sequence[int] = (512, 512, 512, 512, 512)
    num_classes: int = 10
    ghost_batch_size: int | None = None
    momentum: float = 0.9
    running_stats: str = "sequential"

    @nn.compact
    def __call__(self, x, train: bool = True):
        """(N, D) or (N, ...) inputs (flattened) -> (N, num_classes) logits."""
        check_int("num_classes", self.num_classes, min=1)
        if not self.features or any(check_int("features", w, min=1) < 1 for w in self.features):
            raise ValueError(f"features must be a non-empty sequence of widths >= 1, got "
                             f"{self.features}")
        x = x.reshape((x.shape[0], -1))
        for w in self.features:
            x = nn.Dense(w)(x)
            x = GhostBatchNorm(ghost_batch_size=self.ghost_batch_size,
                               momentum=self.momentum, running_stats=self.running_stats,
                               use_running_average=not train)(x)
            x = nn.relu(x)
        return nn.Dense(self.num_classes)(x)


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy of (N, K) logits and (N,) int labels in [0, K).

    Labels are range-checked when concrete (under ``jit`` only dtype and shape).
    """
    logits = as_float_array("logits", logits, ndim=2)
    labels = check_labels("labels", labels, logits.shape[1], ndim=1)
    check_same_leading(logits=logits, labels=labels)
    if logits.shape[0] == 0:
        raise ValueError("logits and labels must hold at least one example, got N = 0")
    logp = nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))
