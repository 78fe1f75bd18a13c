"""Per-context-length metrics of a predictive mean and variance."""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy as jsp

from gapjax._checks import check_positive
from gapjax.icl._loss import VAR_FLOOR, gaussian_nll


def two_sided_prob(z, dof=None):
    """``P(|Z| <= |z|)`` for a standard normal, or a Student-t with ``dof``."""
    if dof is not None:
        check_positive("dof", dof)
    if dof is None:
        return jsp.special.erf(jnp.abs(z) / jnp.sqrt(2.0))
    return 1.0 - jsp.special.betainc(0.5 * dof, 0.5, dof / (dof + jnp.square(z)))


def uq_metrics(mean, var, y, *, dof=None, level: float = 0.9,
               var_floor: float = VAR_FLOOR, sigma_ref=None) -> dict:
    """Metrics per position, averaged over tasks (axis 0).

    Arguments:
      mean, var, y: ``(N, T)``; ``var`` is the Gaussian predictive variance, or
        the Student-t scale^2 when ``dof`` is given (then ``nll`` is still the
        Gaussian NLL of ``var`` and ``coverage`` uses the t interval).
      dof: optional ``(N, T)`` Student-t degrees of freedom.
      level: central-interval level for ``coverage``.
      sigma_ref: optional ``(N, T)`` reference std (e.g. the Bayes one).
    Returns:
      dict of ``(T,)`` arrays: ``mse`` ``E[(y - mean)^2]``, ``nll`` Gaussian NLL
      (variance floored), ``z2`` ``E[(y - mean)^2 / var]`` (floored var),
      ``coverage`` fraction of ``y`` inside the central ``level`` interval,
      ``sigma`` mean predicted std, and ``sigma_ratio`` ``E[sigma / sigma_ref]``.
    """
    mean, var, y = jnp.asarray(mean), jnp.asarray(var), jnp.asarray(y)
    if not (mean.shape == var.shape == y.shape) or mean.ndim != 2:
        raise ValueError(f"mean, var, y must share a (N, T) shape, got {mean.shape}, "
                         f"{var.shape}, {y.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    check_positive("var", var, allow_zero=True)
    v = jnp.maximum(var, var_floor)
    z = (y - mean) / jnp.sqrt(v)
    out = {
        "mse": jnp.mean(jnp.square(y - mean), axis=0),
        "nll": jnp.mean(gaussian_nll(mean, var, y, var_floor), axis=0),
        "z2": jnp.mean(jnp.square(z), axis=0),
        "coverage": jnp.mean(two_sided_prob(z, dof) <= level, axis=0),
        "sigma": jnp.mean(jnp.sqrt(v), axis=0),
    }
    if sigma_ref is not None:
        out["sigma_ratio"] = jnp.mean(jnp.sqrt(v) / sigma_ref, axis=0)
    return out


def position_average(metrics: dict) -> dict:
    """Averages every per-position metric over positions (floats)."""
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics must be a dict of arrays (from uq_metrics), got "
                        f"{type(metrics).__name__}")
    return {k: float(jnp.mean(v)) for k, v in metrics.items()}
