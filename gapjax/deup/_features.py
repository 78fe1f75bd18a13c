"""Stationarizing features ``phi(x)`` relative to a reference (training) set.

Every feature is a pure function of the query points and of the *training set
of the predictor whose error is being predicted* (``ref_x`` with its boolean
``ref_mask``), so the same function produces the features of an error-data row
(reference = that fold model's training set) and of an inference query
(reference = the final predictor's training set). There is one convention only.

Seen-bit convention (everywhere): ``b(x) = 1`` iff ``x`` lies within ``eps``
(Euclidean) of a point of the predictor's training set, else ``0``. Out-of-sample
error rows therefore always have ``b = 0``; a row with ``b = 1`` would mean the
model trained on that point (this is also used as a leakage check).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from gapjax._checks import as_float_array, check_ndim, check_positive, check_shape


def _sq_dists(q: jax.Array, r: jax.Array) -> jax.Array:
    """(Q, D), (R, D) -> (Q, R) squared Euclidean distances (clamped >= 0)."""
    d = (jnp.sum(q * q, -1)[:, None] + jnp.sum(r * r, -1)[None, :]
         - 2.0 * q @ r.T)
    return jnp.maximum(d, 0.0)


def _exact_sq_dists(q, r):
    diff = q[:, None, :] - r[None, :, :]
    return jnp.sum(diff * diff, -1)


def _check_ref(query, ref_x, ref_mask):
    check_ndim("ref_x", ref_x, ndim=2)
    if query is not None:
        check_ndim("query", query, ndim=2)
        if jnp.shape(ref_x)[1] != jnp.shape(query)[1]:
            raise ValueError(f"ref_x must have query's {jnp.shape(query)[1]} columns, got "
                             f"shape {jnp.shape(ref_x)}")
    check_shape("ref_mask", ref_mask, (jnp.shape(ref_x)[0],), "(one flag per ref_x row)")


def distance_to_data(query: jax.Array, ref_x: jax.Array, ref_mask: jax.Array) -> jax.Array:
    """``(Q,)`` Euclidean distance from each query to the nearest masked reference.

    Computed from exact differences (no cancellation), so a query equal to a
    reference point gets exactly 0.
    """
    _check_ref(query, ref_x, ref_mask)
    d2 = _exact_sq_dists(query, ref_x)
    d2 = jnp.where(ref_mask[None, :], d2, jnp.inf)
    return jnp.sqrt(jnp.min(d2, axis=1))


def seen_bit(query: jax.Array, ref_x: jax.Array, ref_mask: jax.Array,
             eps: float = 1e-6) -> jax.Array:
    """``(Q,)`` float 1.0 if the query is within ``eps`` of a (masked) training
    point of the predictor, else 0.0 -- the single seen-bit convention."""
    check_positive("eps", eps, allow_zero=True)
    return (distance_to_data(query, ref_x, ref_mask) <= eps).astype(jnp.float32)


def scott_bandwidth(ref_x: jax.Array, ref_mask: jax.Array) -> jax.Array:
    """Scott's rule ``h = n^(-1/(d+4)) * mean_j std_j`` over the masked points."""
    _check_ref(None, ref_x, ref_mask)
    m = ref_mask.astype(ref_x.dtype)
    n = jnp.maximum(jnp.sum(m), 1.0)
    mean = jnp.sum(ref_x * m[:, None], 0) / n
    var = jnp.sum(jnp.square(ref_x - mean[None, :]) * m[:, None], 0) / jnp.maximum(n - 1.0, 1.0)
    d = ref_x.shape[1]
    return n ** (-1.0 / (d + 4)) * jnp.maximum(jnp.mean(jnp.sqrt(var)), 1e-6)


def kde_log_density(query: jax.Array, ref_x: jax.Array, ref_mask: jax.Array,
                    bandwidth) -> jax.Array:
    """``(Q,)`` Gaussian-KDE log-density ``log q(x|D)``.

    ``q(x) = (1/n) sum_{i in D} N(x; x_i, h^2 I)`` over the masked references.
    """
    _check_ref(query, ref_x, ref_mask)
    check_positive("bandwidth", bandwidth)
    d = ref_x.shape[1]
    h = jnp.asarray(bandwidth, query.dtype)
    logk = -0.5 * _sq_dists(query, ref_x) / (h * h)
    logk = jnp.where(ref_mask[None, :], logk, -jnp.inf)
    n = jnp.maximum(jnp.sum(ref_mask.astype(query.dtype)), 1.0)
    return (logsumexp(logk, axis=1) - jnp.log(n)
            - 0.5 * d * jnp.log(2.0 * math.pi * h * h))


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Which features make up ``phi(x)`` (concatenated in this order).

    Attributes:
      use_x: the raw input (or any subset of it, see ``x_dims``).
      x_dims: indices of the input dimensions kept when ``use_x`` (None = all).
      seen: the seen-bit (see module docstring).
      density: KDE log-density ``log q(x|D)``.
      distance: distance to the nearest training point.
      variance: a model log-variance (ensemble or MC-dropout), supplied by the
        caller as ``log_var``.
      bandwidth: KDE bandwidth; None = Scott's rule on the reference set.
      seen_eps: tolerance of the seen-bit.
    """

    use_x: bool = True
    x_dims: tuple[int, ...] | None = None
    seen: bool = False
    density: bool = True
    distance: bool = True
    variance: bool = False
    bandwidth: float | None = None
    seen_eps: float = 1e-6

    def __post_init__(self):
        if not (self.use_x or self.seen or self.density or self.distance or self.variance):
            raise ValueError("FeatureConfig selects no feature")
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0 or None, got {self.bandwidth}")
        if not self.seen_eps >= 0:
            raise ValueError(f"seen_eps must be >= 0, got {self.seen_eps}")
        if self.x_dims is not None:
            dims = tuple(self.x_dims) if isinstance(self.x_dims, (tuple, list)) else None
            if not dims or any(isinstance(i, bool) or not isinstance(i, int) or i < 0
                               for i in dims):
                raise ValueError(f"x_dims must be None or a non-empty tuple of input "
                                 f"indices >= 0, got {self.x_dims!r}")
            object.__setattr__(self, "x_dims", dims)

    def num_features(self, input_dim: int) -> int:
        nx = (len(self.x_dims) if self.x_dims is not None else input_dim) if self.use_x else 0
        return nx + int(self.seen) + int(self.density) + int(self.distance) + int(self.variance)


def compute_features(cfg: FeatureConfig, query: jax.Array, ref_x: jax.Array,
                     ref_mask: jax.Array, log_var: jax.Array | None = None) -> jax.Array:
    """``phi(query)`` relative to the reference set, shape ``(Q, F)``.

    Arguments:
      cfg: :class:`FeatureConfig`.
      query: (Q, D) points.
      ref_x: (R, D) training inputs of the predictor; ref_mask: (R,) bool.
      log_var: (Q,) model log-variance at the queries, required iff
        ``cfg.variance``.
    """
    if not isinstance(cfg, FeatureConfig):
        raise TypeError(f"cfg must be a FeatureConfig, got {type(cfg).__name__}")
    if cfg.variance and log_var is None:
        raise ValueError("log_var is required when FeatureConfig.variance is True")
    query = as_float_array("query", query, ndim=2)
    ref_x = as_float_array("ref_x", ref_x, ndim=2, dtype=query.dtype)
    if ref_x.shape[1] != query.shape[1]:
        raise ValueError(f"ref_x must have query's {query.shape[1]} columns, got shape "
                         f"{ref_x.shape}")
    check_shape("ref_mask", ref_mask, (ref_x.shape[0],), "(one flag per ref_x row)")
    ref_mask = jnp.asarray(ref_mask, bool)
    if cfg.use_x and cfg.x_dims is not None and max(cfg.x_dims) >= query.shape[1]:
        raise ValueError(f"FeatureConfig.x_dims={cfg.x_dims} indexes beyond the "
                         f"{query.shape[1]} input columns of query")
    if log_var is not None:
        check_shape("log_var", log_var, (query.shape[0],), "(one per query)")
    cols = []
    if cfg.use_x:
        cols.append(query if cfg.x_dims is None else query[:, jnp.asarray(cfg.x_dims)])
    if cfg.seen:
        cols.append(seen_bit(query, ref_x, ref_mask, cfg.seen_eps)[:, None])
    if cfg.density:
        h = scott_bandwidth(ref_x, ref_mask) if cfg.bandwidth is None else cfg.bandwidth
        cols.append(kde_log_density(query, ref_x, ref_mask, h)[:, None])
    if cfg.distance:
        cols.append(distance_to_data(query, ref_x, ref_mask)[:, None])
    if cfg.variance:
        cols.append(log_var[:, None].astype(query.dtype))
    return jnp.concatenate(cols, axis=1)
