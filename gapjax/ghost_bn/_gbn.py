"""Ghost Batch Normalization (Hoffer, Hubara & Soudry 2017, Algorithm 1)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen import dtypes
from jax import lax
from jax.nn import initializers

from gapjax._checks import check_int, check_range

RUNNING_STATS = ("sequential", "mean")


def _canonical_axes(rank: int, axes) -> tuple[int, ...]:
    if not isinstance(axes, Iterable):
        axes = (axes,)
    return tuple(sorted({rank + a if a < 0 else a for a in axes}))


def num_ghost_batches(batch_size: int, ghost_batch_size: int | None) -> int:
    """``G = batch_size / ghost_batch_size`` (1 when ``ghost_batch_size`` is None).

    Raises ValueError when the batch cannot be split into equal contiguous
    ghost batches (see :class:`GhostBatchNorm` for the ``mask=`` rule).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if ghost_batch_size is None:
        return 1
    if isinstance(ghost_batch_size, bool) or not isinstance(ghost_batch_size, (int, np.integer)):
        raise TypeError(f"ghost_batch_size must be a positive int or None, got "
                        f"{type(ghost_batch_size).__name__} {ghost_batch_size!r}")
    if ghost_batch_size < 1:
        raise ValueError(f"ghost_batch_size must be >= 1, got {ghost_batch_size}")
    if batch_size % ghost_batch_size:
        raise ValueError(
            f"batch size {batch_size} (leading axis of the input) is not divisible by "
            f"ghost_batch_size={ghost_batch_size}; uneven ghost batches are not formed "
            f"silently. Pad the batch to a multiple of ghost_batch_size (e.g. "
            f"{-(-batch_size // ghost_batch_size) * ghost_batch_size}) and pass "
            f"mask= marking the real examples, or choose a divisor of {batch_size}.")
    return batch_size // ghost_batch_size


def ema_weights(num_ghost: int, momentum: float) -> tuple[float, np.ndarray]:
    """Closed form of ``G`` sequential EMA updates ``r <- m r + (1 - m) s_i``.

    ``r_G = m^G r_0 + sum_i (1 - m) m^(G-1-i) s_i``.

    Returns:
      ``(m^G, w)`` with ``w`` the float64 (G,) weights ``(1 - m) m^(G-1-i)``.
    """
    num_ghost = check_int("num_ghost", num_ghost, min=1)
    check_range("momentum", momentum, 0.0, 1.0, hi_open=True)
    i = np.arange(num_ghost, dtype=np.float64)
    return float(momentum) ** num_ghost, (1.0 - momentum) * float(momentum) ** (num_ghost - 1 - i)


class GhostBatchNorm(nn.Module):
    """BatchNorm over contiguous ghost batches with shared scale and bias.

    A batch of ``N = G * B_S`` examples (leading axis 0) is viewed as ``(G, B_S,
    ...)``: ghost batch ``i`` holds examples ``[i B_S, (i+1) B_S)`` and is
    normalised with its own mean and biased variance (reduced over its ``B_S``
    examples and every non-feature axis), then ``y = scale * x_hat + bias`` with
    one ``scale``/``bias`` per feature (paper Algorithm 1). Variables are named
    like ``flax.linen.BatchNorm`` (``params/{scale,bias}``, ``batch_stats/{mean,
    var}``, the running variance is the *biased* batch variance as in Flax), so
    with ``ghost_batch_size=None`` or ``= N`` it is exactly ``nn.BatchNorm``.

    Running statistics (training mode, when not initialising):
      * ``running_stats="sequential"`` (default, the official chunk-loop code):
        one EMA update per ghost batch in order, closed form
        ``r <- m^G r + sum_i (1 - m) m^(G-1-i) s_i`` for ``s = mean`` and
        ``s = var``; equal to ``G`` calls of BatchNorm on the chunks.
      * ``running_stats="mean"`` (Keras ``virtual_batch_size``): one update
        ``r <- m r + (1 - m) mean_i s_i``.
    Momentum is Flax's (``r <- m r + (1 - m) batch``, default 0.99); PyTorch's
    ``momentum=0.1`` is ``momentum=0.9`` here.

    Batch size not divisible by ``ghost_batch_size``: a ValueError. The rule for
    a remainder is to pad the batch to a multiple of ``ghost_batch_size`` and pass
    ``mask`` (broadcastable to ``x``, True = real); statistics of every ghost are
    taken over its unmasked entries only, so a padded last ghost batch is
    normalised with the statistics of its real rows (the official code's short
    last chunk). A ghost (entry) with no unmasked element uses mean 0 / var 1 and
    is skipped by the running-statistics update.

    Devices: with the batch sharded on its leading axis and ``G`` a multiple of
    the device count, each device holds whole ghost batches, so the per-ghost
    reductions stay on-device (never averaged across devices). The running
    statistics combine all ghosts and come out identical on every replica.
    There is no ``axis_name``: under ``jit`` + sharding, XLA places it all.

    Attributes:
      ghost_batch_size: ``B_S``; None means the whole batch (``G = 1``).
      use_running_average: as in ``nn.BatchNorm`` (also a call argument).
      axis: feature axis/axes (not 0, the batch axis). Default -1.
      momentum: EMA decay in [0, 1) (Flax convention). Default 0.99.
      epsilon: added to the variance, >= 0. Default 1e-5.
      running_stats: ``"sequential"`` or ``"mean"`` (see above).
      dtype, param_dtype, use_bias, use_scale, bias_init, scale_init, use_fast_variance:
        as in ``nn.BatchNorm``.
    """

    ghost_batch_size: int | None = None
    use_running_average: bool | None = None
    axis: Any = -1
    momentum: float = 0.99
    epsilon: float = 1e-5
    running_stats: str = "sequential"
    dtype: Any = None
    param_dtype: Any = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Any = initializers.zeros
    scale_init: Any = initializers.ones
    use_fast_variance: bool = True

    def _check(self, x, mask):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"x must be an array, got {type(x).__name__}")
        if x.ndim < 2:
            raise ValueError(f"x must have a batch axis and at least one more axis "
                             f"(e.g. (N, C) or (N, H, W, C)); got shape {x.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"x must hold at least one example (batch axis 0 is empty), "
                             f"got shape {x.shape}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"x must be a floating array, got dtype {x.dtype}")
        feature_axes = _canonical_axes(x.ndim, self.axis)
        if any(a < 0 or a >= x.ndim for a in feature_axes):
            raise ValueError(f"axis={self.axis!r} is out of range for x of rank {x.ndim}")
        if 0 in feature_axes:
            raise ValueError(f"axis={self.axis!r} includes axis 0, the batch axis that "
                             "is split into ghost batches")
        if not 0.0 <= float(self.momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1) (Flax convention, PyTorch's "
                             f"0.1 is 0.9 here), got {self.momentum}")
        if not float(self.epsilon) >= 0.0:
            raise ValueError(f"epsilon must be >= 0, got {self.epsilon}")
        if self.running_stats not in RUNNING_STATS:
            raise ValueError(f"running_stats must be one of {RUNNING_STATS}, got "
                             f"{self.running_stats!r}")
        if mask is not None:
            mshape = jnp.shape(mask)
            try:
                if np.broadcast_shapes(mshape, x.shape) != tuple(x.shape):
                    raise ValueError
            except ValueError:
                raise ValueError(f"mask of shape {mshape} must be broadcastable to x's "
                                 f"shape {x.shape}") from None
        return feature_axes

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None, *,
                 mask: jax.Array | None = None):
        """Normalises ``x``.

        Arguments:
          x: (N, ..., C) floating array, ``N`` a multiple of ``ghost_batch_size``.
          use_running_average: use the stored statistics (inference).
          mask: optional boolean array broadcastable to ``x``; True entries enter
            the statistics.
        Returns:
          array of ``x``'s shape.
        """
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average)
        feature_axes = self._check(x, mask)
        reduction_axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
        feature_shape = [x.shape[a] for a in feature_axes]
        ra_mean = self.variable("batch_stats", "mean",
                                lambda s: jnp.zeros(s, jnp.float32), feature_shape)
        ra_var = self.variable("batch_stats", "var",
                               lambda s: jnp.ones(s, jnp.float32), feature_shape)

        if use_running_average:
            return self._normalize(x, ra_mean.value, ra_var.value, reduction_axes,
                                   feature_axes)

        g = num_ghost_batches(x.shape[0], self.ghost_batch_size)
        if g == 1:
            # The whole batch: the very operations of nn.BatchNorm.
            xr, red, m = x, reduction_axes, mask
        else:
            xr = x.reshape((g, x.shape[0] // g) + x.shape[1:])
            red = tuple(i + 1 for i in reduction_axes)
            m = None if mask is None else jnp.broadcast_to(mask, x.shape).reshape(xr.shape)
        mean, var, valid = self._stats(xr, red, m)
        if g == 1:
            stacked_mean, stacked_var = mean[None], var[None]
            stacked_valid = None if valid is None else valid[None]
        else:
            stacked_mean, stacked_var, stacked_valid = mean, var, valid

        if not self.is_initializing():
            ra_mean.value, ra_var.value = self._update(
                ra_mean.value, ra_var.value, stacked_mean, stacked_var, stacked_valid)

        feat_r = feature_axes if g == 1 else tuple(a + 1 for a in feature_axes)
        y = self._normalize(xr, mean, var, red, feat_r)
        return y.reshape(x.shape)

    # -- statistics ---------------------------------------------------------
    def _stats(self, xr, red, mask):
        """Per-ghost (mean, biased var, valid) reduced over ``red``."""
        dtype = self.dtype if self.dtype is not None else jnp.result_type(xr)
        dtype = jnp.promote_types(dtype, jnp.float32)
        xs = xr.astype(dtype)
        if mask is None:
            if self.use_fast_variance:
                mu, mu2 = xs.mean(red), lax.square(xs).mean(red)
                var = jnp.maximum(0.0, mu2 - lax.square(mu))
            else:
                mu = xs.mean(red)
                var = lax.square(xs - jnp.expand_dims(mu, red)).mean(red)
            return mu, var, None
        mask = jnp.broadcast_to(jnp.asarray(mask, bool), xs.shape)
        count = jnp.sum(mask, red, dtype=dtype)
        safe = jnp.maximum(count, 1.0)
        valid = count > 0
        mu = jnp.sum(jnp.where(mask, xs, 0.0), red) / safe
        if self.use_fast_variance:
            mu2 = jnp.sum(jnp.where(mask, lax.square(xs), 0.0), red) / safe
            var = jnp.maximum(0.0, mu2 - lax.square(mu))
        else:
            dev = lax.square(xs - jnp.expand_dims(mu, red))
            var = jnp.sum(jnp.where(mask, dev, 0.0), red) / safe
        return jnp.where(valid, mu, 0.0), jnp.where(valid, var, 1.0), valid

    def _update(self, r_mean, r_var, mus, vars_, valid):
        """EMA of the running statistics from stacked (G, features) ghost stats."""
        mom = float(self.momentum)
        g = mus.shape[0]
        if self.running_stats == "mean":
            if valid is None:
                mbar, vbar = jnp.mean(mus, 0), jnp.mean(vars_, 0)
                return (mom * r_mean + (1 - mom) * mbar, mom * r_var + (1 - mom) * vbar)
            nv = jnp.sum(valid, 0, dtype=mus.dtype)
            any_valid = nv > 0
            mbar = jnp.sum(jnp.where(valid, mus, 0.0), 0) / jnp.maximum(nv, 1.0)
            vbar = jnp.sum(jnp.where(valid, vars_, 0.0), 0) / jnp.maximum(nv, 1.0)
            return (jnp.where(any_valid, mom * r_mean + (1 - mom) * mbar, r_mean),
                    jnp.where(any_valid, mom * r_var + (1 - mom) * vbar, r_var))
        if valid is None:
            if g == 1:  # nn.BatchNorm's expression, operation for operation
                return (mom * r_mean + (1 - mom) * mus[0], mom * r_var + (1 - mom) * vars_[0])
            decay, w = ema_weights(g, mom)
            w = jnp.asarray(w, mus.dtype)
            return (decay * r_mean + jnp.tensordot(w, mus, 1),
                    decay * r_var + jnp.tensordot(w, vars_, 1))
        # Masked: ghost i decays by d_i = m if it has data else 1 (skipped), so
        # r_G = (prod_i d_i) r_0 + sum_i v_i (1 - m) s_i prod_{j>i} d_j.
        d = jnp.where(valid, mom, 1.0).astype(mus.dtype)
        incl = jnp.flip(jnp.cumprod(jnp.flip(d, 0), 0), 0)  # prod_{j>=i} d_j
        after = jnp.concatenate([incl[1:], jnp.ones_like(incl[:1])], 0)  # prod_{j>i}
        coef = jnp.where(valid, (1 - mom) * after, 0.0)
        return (incl[0] * r_mean + jnp.sum(coef * mus, 0),
                incl[0] * r_var + jnp.sum(coef * vars_, 0))

    # -- normalisation (same arithmetic as flax.linen.normalization._normalize)
    def _normalize(self, x, mean, var, red, feature_axes):
        # stats are (features) or (G, features); broadcast them over ``red``.
        mean = jnp.expand_dims(mean, red)
        var = jnp.expand_dims(var, red)
        feature_shape = [1] * x.ndim
        reduced_feature_shape = []
        for ax in feature_axes:
            feature_shape[ax] = x.shape[ax]
            reduced_feature_shape.append(x.shape[ax])
        y = x - mean
        mul = lax.rsqrt(var + self.epsilon)
        args = [x]
        if self.use_scale:
            scale = self.param("scale", self.scale_init, reduced_feature_shape,
                               self.param_dtype).reshape(feature_shape)
            mul *= scale
            args.append(scale)
        y *= mul
        if self.use_bias:
            bias = self.param("bias", self.bias_init, reduced_feature_shape,
                              self.param_dtype).reshape(feature_shape)
            y += bias
            args.append(bias)
        dtype = dtypes.canonicalize_dtype(*args, dtype=self.dtype)
        return jnp.asarray(y, dtype)

