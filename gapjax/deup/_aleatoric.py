"""Aleatoric estimators ``a(x)`` (all on the raw squared-loss scale).

* known noise: ``a(x) = sigma^2``;
* repeated measurements: the unbiased ``K/(K-1) Var(y_1..y_K)`` regressed on x;
* heteroscedastic model: a Gaussian-NLL MLP with outputs (mean, log variance);
* zero (e.g. clean classification labels).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from gapjax._checks import check_int, check_ndim
from gapjax.deup._fit import MLPConfig, apply_mlp, fit_mlp


def known_noise(noise_var, n: int) -> jax.Array:
    """``(n,)`` constant ``a(x) = noise_var`` (must be >= 0)."""
    if not isinstance(noise_var, jax.core.Tracer) and not float(noise_var) >= 0:
        raise ValueError(f"noise_var must be >= 0, got {noise_var}")
    return jnp.full((check_int("n", n, min=1),), noise_var, jnp.float32)


def zero_aleatoric(n: int) -> jax.Array:
    """``(n,)`` zeros."""
    return jnp.zeros((check_int("n", n, min=1),), jnp.float32)


def repeat_variance(y_reps: jax.Array) -> jax.Array:
    """``(N,)`` unbiased variance ``K/(K-1) * Var(y_1..y_K)`` of ``(N, K)`` repeats."""
    y_reps = jnp.asarray(y_reps)
    if y_reps.ndim != 2 or y_reps.shape[1] < 2:
        raise ValueError(f"y_reps must be (N, K) with K >= 2 repeats, got {y_reps.shape}")
    k = y_reps.shape[1]
    return k / (k - 1) * jnp.var(y_reps, axis=1)


@flax.struct.dataclass
class ScaledRegressor:
    params: dict
    scale: jax.Array


def fit_repeat_aleatoric(cfg: MLPConfig, key: jax.Array, x: jax.Array,
                         y_reps: jax.Array) -> ScaledRegressor:
    """Regresses the unbiased repeat variance on ``x`` (MSE: unbiased for
    ``Var(y|x)``); targets are divided by their mean for conditioning."""
    if x.ndim != 2 or y_reps.ndim != 2 or x.shape[0] != y_reps.shape[0]:
        raise ValueError(f"x must be (N, D) and y_reps (N, K); got {x.shape}, {y_reps.shape}")
    v = repeat_variance(y_reps)
    scale = jnp.maximum(jnp.mean(v), 1e-12)
    params = fit_mlp(cfg, key, x, v / scale, jnp.ones(v.shape, x.dtype))
    return ScaledRegressor(params, scale)


def predict_repeat_aleatoric(cfg: MLPConfig, reg: ScaledRegressor, x: jax.Array) -> jax.Array:
    """``(Q,)`` ``a(x) >= 0`` from :func:`fit_repeat_aleatoric`."""
    return jnp.maximum(apply_mlp(cfg, reg.params, x)[:, 0] * reg.scale, 0.0)


def fit_heteroscedastic(cfg: MLPConfig, key: jax.Array, x: jax.Array, y: jax.Array,
                        weights: jax.Array | None = None):
    """Gaussian-NLL MLP ``x -> (mean, log variance)``; returns params."""
    if x.ndim != 2 or y.shape != x.shape[:1]:
        raise ValueError(f"x must be (N, D) and y (N,); got {x.shape}, {y.shape}")
    w = jnp.ones(y.shape, x.dtype) if weights is None else weights
    return fit_mlp(cfg, key, x, y, w, loss="gauss_nll", out=2)


def predict_heteroscedastic(cfg: MLPConfig, params, x: jax.Array):
    """``(mean (Q,), a(x) = variance (Q,))``."""
    check_ndim("x", x, ndim=2)
    o = apply_mlp(cfg, params, x, out=2)
    return o[:, 0], jnp.exp(o[:, 1])
