"""Few-shot segmentation metrics: class-wise mIoU accumulated over tasks, FB-IoU."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gapjax.repri._inference import EPS, IGNORE


def intersection_union(pred, target) -> tuple[jax.Array, jax.Array]:
    """Per-task background/foreground intersection and union (official
    ``intersectionAndUnionGPU`` with ``ignore_index=255``).

    Arguments:
      pred: (…, H, W) int {0, 1}.
      target: (…, H, W) int {0, 1, 255}; ignore pixels are excluded from both.
    Returns:
      ``(inter, union)``, each (…, 2) float32 pixel counts for ``[bg, fg]``.
    """
    pred, target = jnp.asarray(pred), jnp.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} must have "
                         f"the same shape")
    valid = target != IGNORE
    p = jax.nn.one_hot(jnp.where(valid, pred, 0), 2) * valid[..., None]
    t = jax.nn.one_hot(jnp.where(valid, target, 0), 2) * valid[..., None]
    inter = jnp.sum(p * t, axis=(-3, -2))
    union = jnp.sum(p, axis=(-3, -2)) + jnp.sum(t, axis=(-3, -2)) - inter
    return inter, union


class IoUSums(NamedTuple):
    """Running sums over tasks.

    ``class_inter``/``class_union``: (num_classes,) foreground intersection and
    union summed per novel class; ``class_count``: (num_classes,) tasks seen per
    class; ``fb_inter``/``fb_union``: (2,) ``[bg, fg]`` sums over all tasks.
    """

    class_inter: jax.Array
    class_union: jax.Array
    class_count: jax.Array
    fb_inter: jax.Array
    fb_union: jax.Array


def init_iou_sums(num_classes: int) -> IoUSums:
    """Zero :class:`IoUSums` for class ids in ``[0, num_classes)``."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    z = jnp.zeros((num_classes,), jnp.float32)
    return IoUSums(z, z, z, jnp.zeros(2, jnp.float32), jnp.zeros(2, jnp.float32))


def accumulate_iou(sums: IoUSums, inter, union, classes) -> IoUSums:
    """Adds a batch of tasks.

    Arguments:
      sums: running :class:`IoUSums`.
      inter, union: (T, 2) from :func:`intersection_union`.
      classes: (T,) int class id of each task's foreground.
    """
    n = sums.class_inter.shape[0]
    classes = jnp.asarray(classes)
    if inter.shape != union.shape or inter.ndim != 2 or inter.shape[-1] != 2 or \
            classes.shape != inter.shape[:1]:
        raise ValueError(f"inter/union must be (T, 2) and classes (T,), got "
                         f"{inter.shape}, {union.shape}, {classes.shape}")
    if not isinstance(classes, jax.core.Tracer):
        c = np.asarray(classes)
        if c.size and (c.min() < 0 or c.max() >= n):
            raise ValueError(f"classes must lie in [0, {n}), got range "
                             f"[{c.min()}, {c.max()}]")
    seg = lambda x: jax.ops.segment_sum(x, classes, num_segments=n)
    return IoUSums(sums.class_inter + seg(inter[:, 1]),
                   sums.class_union + seg(union[:, 1]),
                   sums.class_count + seg(jnp.ones_like(inter[:, 1])),
                   sums.fb_inter + jnp.sum(inter, 0), sums.fb_union + jnp.sum(union, 0))


def _check_sums(sums):
    if not isinstance(sums, IoUSums):
        raise TypeError(f"sums must be IoUSums (from init_iou_sums / accumulate_iou), got "
                        f"{type(sums).__name__}")


def class_iou(sums: IoUSums) -> jax.Array:
    """(num_classes,) IoU per class ``inter / (union + 1e-10)`` (NaN if unseen)."""
    _check_sums(sums)
    iou = sums.class_inter / (sums.class_union + EPS)
    return jnp.where(sums.class_count > 0, iou, jnp.nan)


def mean_iou(sums: IoUSums) -> jax.Array:
    """mIoU: mean of :func:`class_iou` over the classes that had tasks (official)."""
    _check_sums(sums)
    return jnp.nanmean(class_iou(sums))


def fb_iou(sums: IoUSums) -> jax.Array:
    """FB-IoU: mean of background and foreground IoU, each summed over tasks."""
    _check_sums(sums)
    return jnp.mean(sums.fb_inter / (sums.fb_union + EPS))
