"""The large-batch regime adaptation recipe and weight-distance diagnostics.

A *regime* is the paper's training schedule: batch size, epochs and a
piecewise-constant learning rate given as ``{start_epoch: lr}`` (the official
code's ``model.regime`` dict), plus SGD momentum 0.9, weight decay 1e-4 and
gradient-norm clipping at 5 (the official code clips in every run).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gapjax._checks import check_int


@dataclasses.dataclass(frozen=True)
class Regime:
    """A training regime.

    Attributes:
      batch_size: examples per update.
      epochs: passes over the training set (may be fractional after scaling).
      lr: ``((start_epoch, lr), ...)`` sorted, first start 0: the learning rate
        from ``start_epoch`` on (piecewise constant).
      momentum: SGD momentum (0.9 in the paper).
      weight_decay: L2 coefficient added to the gradient (1e-4).
      clip_norm: global gradient-norm clip (5.0); None disables it.
    """

    batch_size: int
    epochs: float
    lr: tuple[tuple[float, float], ...]
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_norm: float | None = 5.0

    def __post_init__(self):
        if isinstance(self.batch_size, bool) or int(self.batch_size) != self.batch_size \
                or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ValueError(f"epochs must be a finite number > 0, got {self.epochs!r}")
        lr = tuple((float(e), float(v)) for e, v in (dict(self.lr).items()
                                                      if isinstance(self.lr, dict) else self.lr))
        if not lr or lr[0][0] != 0.0:
            raise ValueError(f"lr must be a non-empty schedule starting at epoch 0, got {self.lr!r}")
        starts = [e for e, _ in lr]
        if any(b <= a for a, b in zip(starts, starts[1:])):
            raise ValueError(f"lr start epochs must be strictly increasing, got {starts}")
        if any(not (math.isfinite(v) and v > 0) for _, v in lr):
            raise ValueError(f"every learning rate must be finite and > 0, got {lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not self.weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 or None, got {self.clip_norm}")
        object.__setattr__(self, "lr", lr)
        object.__setattr__(self, "batch_size", int(self.batch_size))


def _check_regime(regime):
    if not isinstance(regime, Regime):
        raise TypeError(f"regime must be a Regime, got {type(regime).__name__}")
    return regime


def _ratio(regime: Regime, large_batch: int) -> float:
    _check_regime(regime)
    if isinstance(large_batch, bool) or int(large_batch) != large_batch or large_batch < 1:
        raise ValueError(f"large_batch must be a positive int, got {large_batch!r}")
    return large_batch / regime.batch_size


def scale_lr(regime: Regime, large_batch: int) -> Regime:
    """The large-batch regime with every learning rate times ``sqrt(B_L / B_S)``.

    ``regime`` is the small-batch regime (``B_S = regime.batch_size``); epochs
    and drop epochs are unchanged (paper Sec. 4.1, "learning rate tuning").
    """
    k = math.sqrt(_ratio(regime, large_batch))
    return dataclasses.replace(regime, batch_size=int(large_batch),
                               lr=tuple((e, v * k) for e, v in regime.lr))


def train_longer(regime: Regime, large_batch: int) -> Regime:
    """The large-batch regime with epochs and every drop epoch times ``B_L / B_S``.

    Learning rates are unchanged (compose with :func:`scale_lr`). With ``N``
    divisible by both batch sizes the number of updates, and the update index of
    every drop, equal the small-batch run's (paper Sec. 5, "regime adaptation").
    """
    k = _ratio(regime, large_batch)
    return dataclasses.replace(regime, batch_size=int(large_batch), epochs=regime.epochs * k,
                               lr=tuple((e * k, v) for e, v in regime.lr))


def adapt_regime(regime: Regime, large_batch: int, *, sqrt_lr: bool = True,
                 longer: bool = False) -> Regime:
    """``regime`` moved to ``large_batch``, optionally with the sqrt LR rule and
    "train longer" (both = the paper's full regime adaptation)."""
    _ratio(regime, large_batch)
    out = scale_lr(regime, large_batch) if sqrt_lr else regime
    if longer:
        out = train_longer(dataclasses.replace(out, batch_size=regime.batch_size), large_batch)
    return dataclasses.replace(out, batch_size=int(large_batch))


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Updates per epoch with the last partial batch dropped (``gapjax.data.batch_at``)."""
    num_examples = check_int("num_examples", num_examples, min=1)
    batch_size = check_int("batch_size", batch_size, min=1)
    if batch_size > num_examples:
        raise ValueError(f"batch_size must be in [1, num_examples={num_examples}], "
                         f"got {batch_size}")
    return num_examples // batch_size


def total_updates(regime: Regime, num_examples: int) -> int:
    """``round(epochs * steps_per_epoch)``: the number of updates of the run."""
    _check_regime(regime)
    return int(round(regime.epochs * steps_per_epoch(num_examples, regime.batch_size)))


def lr_boundaries(regime: Regime, num_examples: int) -> tuple[list[int], list[float]]:
    """The schedule in updates: ``(drop_steps, lrs)`` with ``len(lrs) = len(drop_steps)+1``.

    Drop ``j`` happens at update ``round(start_epoch_j * steps_per_epoch)``.
    """
    _check_regime(regime)
    spe = steps_per_epoch(num_examples, regime.batch_size)
    return ([int(round(e * spe)) for e, _ in regime.lr[1:]], [v for _, v in regime.lr])


def lr_schedule(regime: Regime, num_examples: int) -> optax.Schedule:
    """Piecewise-constant optax schedule ``step -> lr`` of ``regime``."""
    steps, lrs = lr_boundaries(regime, num_examples)
    steps_a = jnp.asarray(steps, jnp.int32)
    lrs_a = jnp.asarray(lrs, jnp.float32)

    def schedule(step):
        return lrs_a[jnp.sum(jnp.asarray(step) >= steps_a)]

    return schedule


def make_optimizer(regime: Regime, num_examples: int) -> optax.GradientTransformation:
    """The official code's optimizer as an optax chain.

    ``g <- clip(g, clip_norm)`` (global norm), ``g <- g + wd * w``,
    ``buf <- momentum * buf + g``, ``w <- w - lr_t * buf``: PyTorch's
    ``clip_grad_norm(params, 5)`` followed by ``SGD(momentum, weight_decay)``
    (no dampening, no Nesterov), weight decay on every parameter.
    """
    _check_regime(regime)
    parts = []
    if regime.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(regime.clip_norm))
    if regime.weight_decay:
        parts.append(optax.add_decayed_weights(regime.weight_decay))
    parts.append(optax.sgd(lr_schedule(regime, num_examples), momentum=regime.momentum or None))
    return optax.chain(*parts)


# -- weight distance ---------------------------------------------------------
def _layer_name(path) -> str:
    keys = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path]
    keys = [str(k) for k in keys]
    return "/".join(keys[:-1]) if len(keys) > 1 else keys[0]


def weight_distance(params: Any, params0: Any) -> dict[str, jax.Array]:
    """Per-layer distance ``||w_t - w_0||`` (Frobenius over the layer's leaves).

    A layer is the module holding a leaf (its path minus the leaf's own name),
    e.g. ``"Dense_0"`` groups ``kernel`` and ``bias``. Works under jit and vmap.

    Arguments:
      params, params0: parameter pytrees of the same structure.
    Returns:
      ``{layer_name: scalar}`` (float32 accumulation).
    """
    s1, s0 = jax.tree.structure(params), jax.tree.structure(params0)
    if s1 != s0:
        raise ValueError(f"params and params0 must have the same structure; got {s1} and {s0}")
    sq: dict[str, Any] = {}
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    flat0 = jax.tree.leaves(params0)
    for (path, w), w0 in zip(flat, flat0):
        if jnp.shape(w) != jnp.shape(w0):
            raise ValueError(f"leaf {_layer_name(path)} has shape {jnp.shape(w)} vs "
                             f"{jnp.shape(w0)} in params0")
        d = jnp.asarray(w, jnp.promote_types(jnp.result_type(w), jnp.float32)) - w0
        axes = tuple(range(d.ndim))
        v = jnp.sum(jnp.square(d), axis=axes)
        name = _layer_name(path)
        sq[name] = v if name not in sq else sq[name] + v
    return {k: jnp.sqrt(v) for k, v in sq.items()}


def log_fit(steps, distances) -> dict[str, float]:
    """Least-squares fit ``d = a + b log t`` and its Pearson correlation ``r``.

    The paper's observation (Sec. 3): in the initial high-learning-rate phase the
    weight distance from initialisation grows like ``log t``.

    Arguments:
      steps: (T,) update counts ``t > 0``.
      distances: (T,) ``||w_t - w_0||``.
    Returns:
      ``{"a", "b", "r"}`` (float64).
    """
    t = np.asarray(steps, np.float64)
    d = np.asarray(distances, np.float64)
    if t.ndim != 1 or t.shape != d.shape:
        raise ValueError(f"steps and distances must be 1-D of equal length, got shapes "
                         f"{t.shape} and {d.shape}")
    if t.size < 3:
        raise ValueError(f"need at least 3 points for a fit with a correlation, got {t.size}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(d))):
        raise ValueError("steps and distances must be finite")
    if np.any(t <= 0):
        raise ValueError("steps must be > 0 (log t)")
    return _linfit(np.log(t), d)


def _linfit(u, d) -> dict[str, float]:
    uc, dc = u - u.mean(), d - d.mean()
    suu, sdd = float(uc @ uc), float(dc @ dc)
    if suu == 0:
        raise ValueError("need at least two distinct steps")
    b = float(uc @ dc) / suu
    a = float(d.mean() - b * u.mean())
    r = float(uc @ dc) / math.sqrt(suu * sdd) if sdd > 0 else float("nan")
    return {"a": a, "b": b, "r": r}


def correlation(x, y) -> float:
    """Pearson correlation of two 1-D arrays (float64)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 3:
        raise ValueError(f"x and y must be 1-D of equal length >= 3, got {x.shape}, {y.shape}")
    return _linfit(x, y)["r"]
