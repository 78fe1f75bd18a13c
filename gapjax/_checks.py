"""Argument checks shared by every method, run in Python before tracing.

Each helper names the argument in its error. Shape and dtype checks apply to
tracers too (they only read ``.shape`` / ``.dtype``); value checks (finite,
positive, label range) run only on concrete inputs and are skipped for tracers,
so every public function stays usable under ``jit`` / ``vmap``.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def concrete(x):
    """``np.asarray(x)`` if ``x`` holds concrete values, else ``None`` (tracer)."""
    if is_tracer(x):
        return None
    try:
        return np.asarray(x)
    except Exception:  # pragma: no cover - exotic array types
        return None


def _short(v) -> str:
    return repr(v)[:120]


def _ndim_text(ndim) -> str:
    return str(ndim) if isinstance(ndim, int) else " or ".join(map(str, ndim))


def as_float_array(name: str, x, *, ndim=None, min_ndim: int | None = None,
                   dtype=None, min_size: int | None = None):
    """``x`` as a floating JAX array; integer/bool arrays are cast to ``dtype``
    (default: the default float dtype). Raises TypeError for non-numeric input and
    ValueError for a rank not in ``ndim`` (int or tuple) or below ``min_ndim``, or
    fewer than ``min_size`` rows along axis 0."""
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    if not is_tracer(x):
        try:
            a = np.asarray(x) if not hasattr(x, "dtype") else x
        except Exception:
            raise TypeError(f"{name} must be a numeric array, got "
                            f"{type(x).__name__}") from None
        kind = np.dtype(a.dtype).kind
        if kind not in "biufc":
            raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
        if kind == "c":
            raise TypeError(f"{name} must be real, got complex dtype {a.dtype}")
    elif not jnp.issubdtype(x.dtype, jnp.number) and x.dtype != jnp.bool_:
        raise TypeError(f"{name} must be a numeric array, got dtype {x.dtype}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(dtype or jnp.result_type(float))
    elif dtype is not None:
        x = x.astype(dtype)
    check_ndim(name, x, ndim=ndim, min_ndim=min_ndim)
    if min_size is not None and (x.ndim == 0 or x.shape[0] < min_size):
        raise ValueError(f"{name} must hold at least {min_size} row(s) along axis 0, "
                         f"got shape {x.shape}")
    return x


def as_float64_numpy(name: str, x, *, ndim=None):
    """``x`` as a float64 NumPy array (host-side metrics), with the checks of
    :func:`as_float_array` (no trip through JAX's default float32)."""
    if is_tracer(x):
        raise TypeError(f"{name} must be concrete (this is evaluated on the host, not traced)")
    try:
        a = np.asarray(x)
    except Exception:
        raise TypeError(f"{name} must be a numeric array, got {type(x).__name__}") from None
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    check_ndim(name, a, ndim=ndim)
    return a.astype(np.float64)


def check_ndim(name: str, x, *, ndim=None, min_ndim: int | None = None):
    shape = np.shape(x)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if len(shape) not in allowed:
            raise ValueError(f"{name} must have rank {_ndim_text(allowed)}, got shape "
                             f"{tuple(shape)}")
    if min_ndim is not None and len(shape) < min_ndim:
        raise ValueError(f"{name} must have rank >= {min_ndim}, got shape {tuple(shape)}")
    return x


def check_shape(name: str, x, shape, what: str = ""):
    """``x.shape == shape``; ``None`` entries of ``shape`` match any size."""
    got = tuple(np.shape(x))
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}{' ' + what if what else ''}, "
                         f"got {got}")
    return x


def check_broadcastable(name: str, x, shape, what: str = ""):
    """``x`` broadcasts to ``shape`` (without growing it)."""
    try:
        ok = np.broadcast_shapes(np.shape(x), tuple(shape)) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name} of shape {tuple(np.shape(x))} must broadcast to "
                         f"{tuple(shape)}{' ' + what if what else ''}")
    return x


def check_same_leading(**arrays) -> int:
    """All arrays have the same size along axis 0 (the batch); returns it."""
    sizes = {k: (np.shape(v)[0] if np.ndim(v) else None) for k, v in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError("mismatched batch sizes (axis 0): "
                         + ", ".join(f"{k} has {s}" for k, s in sizes.items()))
    return next(iter(sizes.values()))


def check_same_shape(**arrays):
    shapes = {k: np.shape(v) for k, v in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError("arguments must have the same shape, got "
                         + ", ".join(f"{k} {s}" for k, s in shapes.items()))
    return next(iter(shapes.values()))


def check_finite(name: str, x):
    v = concrete(x)
    if v is not None:
        if not np.issubdtype(v.dtype, np.number):
            raise TypeError(f"{name} must be numeric, got dtype {v.dtype}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite (no NaN/inf), got {_short(v)}")
    return x


def check_positive(name: str, x, allow_zero: bool = False):
    """Finite and ``> 0`` (``>= 0`` with ``allow_zero``), when concrete."""
    check_finite(name, x)
    v = concrete(x)
    if v is not None:
        bad = v < 0 if allow_zero else v <= 0
        if np.any(bad):
            what = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{name} must be {what}, got {_short(v)}")
    return x


def check_range(name: str, x, lo=None, hi=None, *, lo_open=False, hi_open=False):
    """Finite and in the interval ``[lo, hi]`` (ends open as asked), when concrete."""
    check_finite(name, x)
    v = concrete(x)
    if v is not None:
        bad = np.zeros(np.shape(v), bool)
        if lo is not None:
            bad |= (v <= lo) if lo_open else (v < lo)
        if hi is not None:
            bad |= (v >= hi) if hi_open else (v > hi)
        if np.any(bad):
            iv = (("(" if lo_open else "[") + ("-inf" if lo is None else str(lo)) + ", "
                  + ("inf" if hi is None else str(hi)) + (")" if hi_open else "]"))
            raise ValueError(f"{name} must be in {iv}, got {_short(v)}")
    return x


def check_int(name: str, v, *, min: int | None = 1, max: int | None = None,
              allow_none: bool = False):
    """A Python/NumPy integer (not bool) in ``[min, max]``; returns ``int(v)``."""
    if v is None and allow_none:
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer{' or None' if allow_none else ''}, "
                        f"got {type(v).__name__} {_short(v)}")
    v = int(v)
    if min is not None and v < min:
        raise ValueError(f"{name} must be >= {min}, got {v}")
    if max is not None and v > max:
        raise ValueError(f"{name} must be <= {max}, got {v}")
    return v


def check_choice(name: str, v, choices):
    if v not in tuple(choices):
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {v!r}")
    return v


def check_labels(name: str, labels, num_classes: int, *, ndim=None, ignore=()):
    """Integer class labels in ``[0, num_classes)`` (values in ``ignore`` allowed).

    Dtype/rank checks always; the range check when concrete. Returns a JAX array.
    """
    if labels is None:
        raise TypeError(f"{name} must be an integer array, got None")
    dt = labels.dtype if hasattr(labels, "dtype") else np.asarray(labels).dtype
    if not (jnp.issubdtype(dt, jnp.integer) and dt != jnp.bool_):
        raise TypeError(f"{name} must be an integer array of class labels, got dtype {dt}")
    check_ndim(name, labels, ndim=ndim)
    v = concrete(labels)
    if v is not None and v.size:
        bad = (v < 0) | (v >= num_classes)
        for ok in ignore:
            bad &= v != ok
        if np.any(bad):
            raise ValueError(f"{name} must be class labels in [0, {num_classes})"
                             f"{' or ' + str(tuple(ignore)) if ignore else ''}, got values "
                             f"{_short(np.unique(v[bad]))}")
    return jnp.asarray(labels)


# -- scaling-specific helpers (sample counts and temperatures) ------------------

def check_ks(ks) -> np.ndarray:
    """ks: 1-D integer array of sample counts >= 1 (must be concrete)."""
    v = concrete(ks)
    if v is None:
        raise TypeError("ks must be concrete (a Python list or NumPy/JAX array "
                        "outside jit); it fixes array shapes")
    v = np.atleast_1d(v)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"ks must be a non-empty 1-D array, got shape {v.shape}")
    if not np.issubdtype(v.dtype, np.number) or np.issubdtype(v.dtype, np.complexfloating):
        raise TypeError(f"ks must be integers, got dtype {v.dtype}")
    if not np.all(np.isfinite(v)) or np.any(v != np.round(v)):
        raise ValueError(f"ks must hold integers, got {_short(v)}")
    if np.any(v < 1):
        raise ValueError(f"ks must be >= 1 (k samples), got min {v.min()}")
    return v.astype(np.int64)


def check_temps(temps):
    v = concrete(temps)
    if v is not None:
        if not np.issubdtype(v.dtype, np.number):
            raise TypeError(f"temps/T must be numeric, got dtype {v.dtype}")
        if v.ndim > 1:
            raise ValueError(f"temps/T must be a scalar or 1-D array, got shape {v.shape}")
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValueError(f"temps/T must be finite and >= 0 (T >= 0), got {_short(v)}")
    return temps
