"""Argument checks run in Python before tracing (skipped for tracers)."""

from __future__ import annotations

import jax
import numpy as np


def concrete(x):
    """``np.asarray(x)`` if ``x`` holds concrete values, else ``None`` (tracer)."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except Exception:  # pragma: no cover - exotic array types
        return None


def check_finite(name: str, x):
    v = concrete(x)
    if v is not None:
        if not np.issubdtype(v.dtype, np.number):
            raise TypeError(f"{name} must be numeric, got dtype {v.dtype}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite (no NaN/inf), got {v!r}"[:300])
    return x


def check_positive(name: str, x, allow_zero: bool = False):
    check_finite(name, x)
    v = concrete(x)
    if v is not None:
        bad = v < 0 if allow_zero else v <= 0
        if np.any(bad):
            what = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{name} must be {what}, got {v!r}"[:300])
    return x


def check_ks(ks) -> np.ndarray:
    """ks: 1-D integer array of sample counts >= 1 (must be concrete)."""
    v = concrete(ks)
    if v is None:
        raise TypeError("ks must be concrete (a Python list or NumPy/JAX array "
                                        "outside jit); it fixes array shapes")
    v = np.atleast_1d(v)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"ks must be a non-empty 1-D array, got shape {v.shape}")
    if not np.all(np.isfinite(v)) or np.any(v != np.round(v)):
        raise ValueError(f"ks must hold integers, got {v!r}"[:300])
    if np.any(v < 1):
        raise ValueError(f"ks must be >= 1 (k samples), got min {v.min()}")
    return v.astype(np.int64)


def check_temps(temps):
    v = concrete(temps)
    if v is not None:
        if v.ndim > 1:
            raise ValueError(f"temps must be a scalar or 1-D array, got shape {v.shape}")
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValueError(f"temps must be finite and >= 0 (T >= 0), got {v!r}"[:300])
    return temps


def check_same_shape(**arrays):
    shapes = {k: np.shape(v) for k, v in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"arguments must have the same shape, got {shapes}")
    return next(iter(shapes.values()))
