"""Out-of-sample error data (Alg. 1/2), the error predictor ``e``, and ``u``.

Error data are rows ``(phi(x_i), loss of a model at x_i)`` where that model did
*not* train on ``x_i``. Every row records the fold id of the model that produced
it, the index of its point, and that model's training mask, so leakage can be
checked row by row (:func:`check_no_leakage`); :func:`kfold_error_data` makes
leakage impossible by construction (model ``k`` trains with weight exactly 0 on
fold ``k`` and only fold-``k`` rows are taken from it).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import digamma

from gapjax._checks import (as_float_array, check_int, check_labels, check_ndim, check_positive,
                            check_same_shape, check_shape, concrete)
from gapjax.deup._features import FeatureConfig, compute_features
from gapjax.deup._fit import MLPConfig, apply_mlp, fit_mlp
from gapjax.deup._predictor import Predictor, fit_predictor, loss_of, predict

# E[log chi^2_1] = digamma(1/2) + log 2 = -1.2704. A squared Gaussian residual
# r^2 = s^2 chi^2_1 has E[log r^2] = log s^2 + LOG_CHI2_1_MEAN, so an error
# predictor trained on log losses estimates log s^2 - 1.27, i.e.
# exp(e_log) = 0.28 s^2. The raw-scale estimate is exp(e_log - LOG_CHI2_1_MEAN).
LOG_CHI2_1_MEAN = float(digamma(0.5) + math.log(2.0))


@flax.struct.dataclass
class ErrorData:
    """Rows of the error predictor's training set.

    Attributes:
      phi: (R, F) features of the row's point relative to its model's training set.
      loss: (R,) raw loss of that model at the point.
      fold: (R,) int32 id of the model (fold) that produced the row.
      point: (R,) int32 index of the row's point in the data arrays.
      trained_on: (R, N) bool training mask of the producing model.
      valid: (R,) bool, False for padding rows.
    """

    phi: jax.Array
    loss: jax.Array
    fold: jax.Array
    point: jax.Array
    trained_on: jax.Array
    valid: jax.Array

    @property
    def num_rows(self) -> int:
        return self.phi.shape[0]


def empty_error_data(num_rows: int, num_features: int, num_points: int,
                     dtype=jnp.float32) -> ErrorData:
    """``num_rows`` invalid (padding) rows, to be filled with :func:`set_row`."""
    num_rows = check_int("num_rows", num_rows, min=0)
    num_features = check_int("num_features", num_features, min=1)
    num_points = check_int("num_points", num_points, min=1)
    return ErrorData(phi=jnp.zeros((num_rows, num_features), dtype),
                     loss=jnp.zeros((num_rows,), dtype),
                     fold=jnp.full((num_rows,), -1, jnp.int32),
                     point=jnp.full((num_rows,), -1, jnp.int32),
                     trained_on=jnp.zeros((num_rows, num_points), bool),
                     valid=jnp.zeros((num_rows,), bool))


def set_row(ed: ErrorData, r, phi, loss, fold, point, trained_on) -> ErrorData:
    """Writes row ``r`` (jit-able; ``r`` may be traced; a concrete ``r`` is
    range-checked, and ``phi`` must be ``(F,)``)."""
    if concrete(r) is not None and not 0 <= int(r) < ed.num_rows:
        raise ValueError(f"r must be a row index in [0, {ed.num_rows}), got {r}")
    check_shape("phi", phi, ed.phi.shape[1:], "(one row of ed.phi)")
    check_shape("trained_on", trained_on, ed.trained_on.shape[1:], "(N,)")
    return ErrorData(phi=ed.phi.at[r].set(phi), loss=ed.loss.at[r].set(loss),
                     fold=ed.fold.at[r].set(fold), point=ed.point.at[r].set(point),
                     trained_on=ed.trained_on.at[r].set(trained_on),
                     valid=ed.valid.at[r].set(True))


def concat_error_data(*eds: ErrorData) -> ErrorData:
    """Row-wise concatenation (all built on the same data arrays)."""
    if not eds:
        raise ValueError("concat_error_data needs at least one ErrorData (eds is empty)")
    if any(not isinstance(e, ErrorData) for e in eds):
        raise TypeError("eds must all be ErrorData")
    if len({e.phi.shape[1] for e in eds}) != 1:
        raise ValueError(f"eds have different feature counts (phi widths "
                         f"{sorted({e.phi.shape[1] for e in eds})})")
    n = {e.trained_on.shape[1] for e in eds}
    if len(n) != 1:
        raise ValueError(f"error data built on different data arrays (N = {sorted(n)})")
    return jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *eds)


def _check_ed(ed):
    if not isinstance(ed, ErrorData):
        raise TypeError(f"ed must be ErrorData (from kfold_error_data / empty_error_data), "
                        f"got {type(ed).__name__}")


def leaked_rows(ed: ErrorData) -> jax.Array:
    """(R,) bool: valid rows whose producing model trained on the row's point."""
    _check_ed(ed)
    idx = jnp.clip(ed.point, 0, ed.trained_on.shape[1] - 1)
    hit = jnp.take_along_axis(ed.trained_on, idx[:, None], axis=1)[:, 0]
    return ed.valid & (hit | (ed.point < 0))


def check_no_leakage(ed: ErrorData) -> None:
    """Raises ValueError naming the rows that came from a model trained on them."""
    bad = np.flatnonzero(np.asarray(leaked_rows(ed)))
    if bad.size:
        raise ValueError(f"{bad.size} error-data rows come from a model that trained on "
                         f"their point (in-sample errors), rows {bad[:10].tolist()}")


def random_folds(key: jax.Array, n: int, num_folds: int) -> jax.Array:
    """(n,) int32 balanced random fold ids in ``[0, num_folds)``."""
    if int(num_folds) < 2 or int(num_folds) > n:
        raise ValueError(f"num_folds must be in [2, n={n}], got {num_folds}")
    perm = jax.random.permutation(key, n)
    return jnp.zeros((n,), jnp.int32).at[perm].set(jnp.arange(n, dtype=jnp.int32) % num_folds)


def _check_xy(x, y, name_x="x", name_y="y", task=None):
    if not hasattr(x, "shape") or x.ndim != 2:
        raise ValueError(f"{name_x} must be a 2-D (N, D) array, got shape "
                         f"{getattr(x, 'shape', None)}")
    if not hasattr(y, "shape") or y.shape != x.shape[:1]:
        raise ValueError(f"{name_y} must have shape ({x.shape[0]},), got "
                         f"{getattr(y, 'shape', None)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name_x} must be floating point, got {x.dtype}")
    if task == "classification" and not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(f"{name_y} must hold integer labels for classification, got {y.dtype}")
    if task == "regression" and not jnp.issubdtype(y.dtype, jnp.floating):
        raise TypeError(f"{name_y} must be floating point for regression, got {y.dtype}")
    if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name_x} contains NaN or inf")
    if (not isinstance(y, jax.core.Tracer) and jnp.issubdtype(y.dtype, jnp.floating)
            and not bool(jnp.all(jnp.isfinite(y)))):
        raise ValueError(f"{name_y} contains NaN or inf")


def kfold_error_data(p: Predictor, fcfg: FeatureConfig, key: jax.Array, x: jax.Array,
                     y: jax.Array, fold: jax.Array, num_folds: int, *,
                     train_mask: jax.Array | None = None):
    """K-fold out-of-sample error data, fold models vmapped in one jit.

    Model ``k`` is trained on the points with ``train_mask & (fold != k)``
    (weight exactly 0 elsewhere) and produces the rows of the points with
    ``fold == k``; their features are computed relative to model ``k``'s own
    training set (so ``b = 0`` always). A fold id that no point uses in
    training (e.g. a held-out validation set with ``train_mask = False`` and
    its own fold id) gives the model trained on *all* training points, i.e. an
    extra out-of-sample set (Alg. 1).

    Arguments:
      p: main :class:`Predictor`; fcfg: :class:`FeatureConfig`.
      key: PRNG key (fold model ``k`` uses ``split(key, num_folds)[k]``).
      x: (N, D) inputs; y: (N,) targets / labels.
      fold: (N,) int fold ids in ``[0, num_folds)``, or -1 for points that only
        train (never evaluated).
      num_folds: number of fold models K.
      train_mask: (N,) bool, points allowed in training (default all).
    Returns:
      ``(ErrorData with N rows, stacked fold-model params (K, ...))``.
    """
    x = as_float_array("x", x, ndim=2)
    y = as_float_array("y", y) if p.task == "regression" else jnp.asarray(y)
    _check_xy(x, y, task=p.task)
    if p.task == "classification":
        check_labels("y", y, p.num_classes)
    fold = jnp.asarray(fold)
    if fold.shape != y.shape or not jnp.issubdtype(fold.dtype, jnp.integer):
        raise ValueError(f"fold must be an integer array of shape {y.shape}, got "
                         f"{fold.dtype} {fold.shape}")
    num_folds = check_int("num_folds", num_folds, min=1)
    train_mask = (jnp.ones(y.shape, bool) if train_mask is None
                  else jnp.asarray(train_mask, bool))
    if train_mask.shape != y.shape:
        raise ValueError(f"train_mask must have shape {y.shape}, got {train_mask.shape}")
    f_np, t_np = np.asarray(fold), np.asarray(train_mask)
    if f_np.min() < -1 or f_np.max() >= num_folds:
        raise ValueError(f"fold ids must be in [-1, {num_folds}), got range "
                         f"[{f_np.min()}, {f_np.max()}]")
    for k in range(num_folds):
        if not np.any(t_np & (f_np != k)):
            raise ValueError(f"fold model {k} would have no training point")
    return _kfold_jit(p, fcfg, num_folds, key, x, y, fold.astype(jnp.int32), train_mask)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _kfold_jit(p, fcfg, num_folds, key, x, y, fold, train_mask):
    n = x.shape[0]
    ks = jnp.arange(num_folds, dtype=jnp.int32)
    w = train_mask[None, :] & (fold[None, :] != ks[:, None])  # (K, N)
    keys = jax.random.split(key, num_folds)
    params = jax.vmap(lambda k, wk: fit_predictor(p, k, x, y, wk.astype(x.dtype)))(keys, w)

    def rows(prm, k, wk):
        pred, log_var = predict(p, prm, x, jax.random.fold_in(k, 1))
        phi = compute_features(fcfg, x, x, wk, log_var if fcfg.variance else None)
        return loss_of(p, pred, y), phi

    loss_all, phi_all = jax.vmap(rows)(params, keys, w)  # (K, N), (K, N, F)
    idx = jnp.clip(fold, 0, num_folds - 1)
    ar = jnp.arange(n)
    ed = ErrorData(phi=phi_all[idx, ar], loss=loss_all[idx, ar], fold=fold,
                   point=ar.astype(jnp.int32), trained_on=w[idx],
                   valid=fold >= 0)
    return ed, params


# --------------------------------------------------------------------------
# Error predictor e(phi)
# --------------------------------------------------------------------------

_TARGETS = ("log", "raw")


@dataclasses.dataclass(frozen=True)
class ErrorConfig:
    """Error predictor ``e``.

    Attributes:
      mlp: :class:`MLPConfig` of ``e``.
      target: ``raw`` (MSE on the loss: unbiased for ``E[loss | phi]``) or
        ``log`` (MSE on ``log(loss + floor)``, the official, stabler choice).
      log_correction: for ``log`` targets, the raw-scale estimate is
        ``exp(e_log - log_correction)``; the default :data:`LOG_CHI2_1_MEAN`
        is exact for squared Gaussian residuals. Use 0.0 to keep the
        geometric mean (only rankings then matter).
      floor: added to losses before the log.
    """

    mlp: MLPConfig = MLPConfig()
    target: str = "log"
    log_correction: float = LOG_CHI2_1_MEAN
    floor: float = 1e-8

    def __post_init__(self):
        if self.target not in _TARGETS:
            raise ValueError(f"target must be one of {_TARGETS}, got {self.target!r}")
        if not self.floor > 0:
            raise ValueError(f"floor must be > 0, got {self.floor}")


@flax.struct.dataclass
class ErrorPredictor:
    """Trained ``e``: params, the feature/target standardisation, and the range
    ``[t_min, t_max]`` of the training targets (predictions are clipped to it:
    ``e`` never extrapolates beyond the losses it has seen, which keeps
    ``exp`` of a log-target network finite far from the data)."""

    params: dict
    phi_mean: jax.Array
    phi_std: jax.Array
    t_mean: jax.Array
    t_std: jax.Array
    t_min: jax.Array
    t_max: jax.Array


def loss_to_target(cfg: ErrorConfig, loss: jax.Array) -> jax.Array:
    """Training target of ``e`` for raw losses (``loss >= 0``)."""
    check_positive("loss", loss, allow_zero=True)
    return jnp.log(loss + cfg.floor) if cfg.target == "log" else loss


def target_to_error(cfg: ErrorConfig, t: jax.Array) -> jax.Array:
    """Raw-loss-scale error estimate from ``e``'s output (scale correction)."""
    return jnp.exp(t - cfg.log_correction) if cfg.target == "log" else t


def init_error_predictor(cfg: ErrorConfig, key: jax.Array, ed: ErrorData) -> ErrorPredictor:
    """An untrained ``e`` (fresh init, identity standardisation) for warm starts."""
    _check_ed(ed)
    from gapjax.deup._fit import _module

    f = ed.phi.shape[1]
    params = _module(cfg.mlp, 1).init(key, ed.phi[:1])["params"]
    z = jnp.zeros((f,), ed.phi.dtype)
    zero = jnp.zeros((), ed.phi.dtype)
    return ErrorPredictor(params, z, z + 1, zero, zero + 1, zero, zero)


def fit_error_predictor(cfg: ErrorConfig, key: jax.Array, ed: ErrorData, *,
                        init: ErrorPredictor | None = None,
                        steps: int | None = None) -> ErrorPredictor:
    """Fits ``e`` by MSE on the valid rows of ``ed`` (features and targets
    standardised with the valid rows' mean / std). ``init`` warm-starts the
    network for ``steps`` steps. jit- and vmap-able."""
    _check_ed(ed)
    w = ed.valid.astype(ed.phi.dtype)
    n = jnp.maximum(jnp.sum(w), 1.0)
    phi_mean = jnp.sum(ed.phi * w[:, None], 0) / n
    phi_std = jnp.sqrt(jnp.sum(jnp.square(ed.phi - phi_mean[None, :]) * w[:, None], 0) / n)
    phi_std = jnp.where(phi_std > 1e-6, phi_std, 1.0)
    t = loss_to_target(cfg, ed.loss)
    t = jnp.where(ed.valid, t, 0.0)
    t_mean = jnp.sum(t * w) / n
    t_std = jnp.sqrt(jnp.sum(jnp.square(t - t_mean) * w) / n)
    t_std = jnp.where(t_std > 1e-6, t_std, 1.0)
    z = (ed.phi - phi_mean[None, :]) / phi_std[None, :]
    params = fit_mlp(cfg.mlp, key, z, (t - t_mean) / t_std, w,
                     init_params=None if init is None else init.params, steps=steps)
    t_min = jnp.min(jnp.where(ed.valid, t, jnp.inf))
    t_max = jnp.max(jnp.where(ed.valid, t, -jnp.inf))
    return ErrorPredictor(params, phi_mean, phi_std, t_mean, t_std, t_min, t_max)


def predict_error(cfg: ErrorConfig, ep: ErrorPredictor, phi: jax.Array) -> jax.Array:
    """``e(phi)`` on the raw loss scale, ``(Q,)`` for ``phi (Q, F)``."""
    check_ndim("phi", phi, ndim=2)
    if ep is not None and jnp.shape(phi)[1] != ep.phi_mean.shape[0]:
        raise ValueError(f"phi must have the {ep.phi_mean.shape[0]} features e was "
                         f"trained on, got shape {jnp.shape(phi)}")
    z = (phi - ep.phi_mean[None, :]) / ep.phi_std[None, :]
    t = apply_mlp(cfg.mlp, ep.params, z)[:, 0] * ep.t_std + ep.t_mean
    return target_to_error(cfg, jnp.clip(t, ep.t_min, ep.t_max))


def epistemic_uncertainty(e: jax.Array, a) -> jax.Array:
    """``u(x) = max(0, e(x) - a(x))`` (both on the raw loss scale)."""
    e = jnp.asarray(e)
    a = jnp.asarray(a, e.dtype)
    if a.ndim and a.shape != e.shape:
        raise ValueError(f"aleatoric a must be a scalar or have shape {e.shape}, got {a.shape}")
    return jnp.maximum(e - a, 0.0)


def excess_risk_squared(pred: jax.Array, mu: jax.Array) -> jax.Array:
    """True EU for squared loss: ``(f(x) - mu(x))^2``."""
    check_same_shape(pred=pred, mu=mu)
    return jnp.square(jnp.asarray(pred) - jnp.asarray(mu))


def excess_risk_log_loss(p_true: jax.Array, f_probs: jax.Array) -> jax.Array:
    """True EU for log loss: ``KL(p(.|x) || f(.|x))`` over the last axis, i.e.
    ``E_{y~p}[-log f(y|x)] - H(p(.|x))``."""
    check_same_shape(p_true=p_true, f_probs=f_probs)
    p = jnp.asarray(p_true)
    q = jnp.maximum(jnp.asarray(f_probs), 1e-30)
    return jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.maximum(p, 1e-30)) - jnp.log(q)), 0.0),
                   axis=-1)
