"""The DEUP pipeline on a fixed data set: f, out-of-sample error data, e, u."""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp

from gapjax._checks import as_float_array, check_labels
from gapjax.deup._errors import (ErrorConfig, ErrorData, ErrorPredictor, _check_xy,
                                 concat_error_data, fit_error_predictor,
                                 kfold_error_data, predict_error, random_folds)
from gapjax.deup._features import FeatureConfig, compute_features
from gapjax.deup._predictor import Predictor, fit_predictor, predict


@dataclasses.dataclass(frozen=True)
class DEUPConfig:
    """Main predictor, error predictor, features and number of folds."""

    predictor: Predictor = Predictor()
    error: ErrorConfig = ErrorConfig()
    features: FeatureConfig = FeatureConfig()
    num_folds: int = 5

    def __post_init__(self):
        if self.features.variance and not self.predictor.has_variance:
            raise ValueError("features.variance needs a predictor with a variance source "
                             "(num_members > 1 or mc_samples > 0)")
        if int(self.num_folds) < 2:
            raise ValueError(f"num_folds must be >= 2, got {self.num_folds}")


@flax.struct.dataclass
class DEUPState:
    """A fitted DEUP model: ``f`` (trained on all training points), ``e``, the
    reference set its features are relative to, and the error data."""

    main_params: dict
    error: ErrorPredictor
    ref_x: jax.Array
    ref_mask: jax.Array
    error_data: ErrorData


def fit_deup(cfg: DEUPConfig, key: jax.Array, x: jax.Array, y: jax.Array, *,
             holdout_x: jax.Array | None = None, holdout_y: jax.Array | None = None,
             fold: jax.Array | None = None, extra_folds: jax.Array | None = None,
             num_extra_folds: int = 0) -> DEUPState:
    """Fits DEUP on ``(x, y)``.

    Error data: K-fold rows of ``(x, y)`` (``cfg.num_folds`` random folds unless
    ``fold`` is given), plus, if a held-out set is given, its rows under the
    model trained on all of ``x`` (fold id K), plus, if ``extra_folds`` is given
    (e.g. folds that group classes), a second K-fold pass with those ids
    (offset by K + 1). ``f`` is trained on all of ``(x, y)``.

    Arguments:
      cfg: :class:`DEUPConfig`; key: PRNG key.
      x: (N, D); y: (N,). holdout_x / holdout_y: optional (H, D) / (H,) points
        never used to train ``f`` (out-of-sample error rows only).
      fold: optional (N,) fold ids in ``[0, K)``.
      extra_folds / num_extra_folds: optional second fold assignment.
    Returns:
      :class:`DEUPState`.
    """
    _check_types(cfg, DEUPConfig)
    x = as_float_array("x", x, ndim=2)
    y = as_float_array("y", y) if cfg.predictor.task == "regression" else jnp.asarray(y)
    _check_xy(x, y, task=cfg.predictor.task)
    if cfg.predictor.task == "classification":
        check_labels("y", y, cfg.predictor.num_classes)
    n = x.shape[0]
    k_fold, k_main, k_err, k_data, k_extra = jax.random.split(key, 5)
    K = int(cfg.num_folds)
    if fold is None:
        fold = random_folds(k_fold, n, K)
    fold = jnp.asarray(fold, jnp.int32)
    xs, ys, train = x, y, jnp.ones((n,), bool)
    num = K
    if holdout_x is not None:
        holdout_x, holdout_y = jnp.asarray(holdout_x), jnp.asarray(holdout_y)
        _check_xy(holdout_x, holdout_y, "holdout_x", "holdout_y", cfg.predictor.task)
        if holdout_x.shape[1] != x.shape[1]:
            raise ValueError(f"holdout_x must have {x.shape[1]} columns, got {holdout_x.shape}")
        h = holdout_x.shape[0]
        xs = jnp.concatenate([x, holdout_x], 0)
        ys = jnp.concatenate([y, holdout_y], 0)
        train = jnp.concatenate([train, jnp.zeros((h,), bool)])
        fold = jnp.concatenate([fold, jnp.full((h,), K, jnp.int32)])
        num = K + 1
    ed, _ = kfold_error_data(cfg.predictor, cfg.features, k_data, xs, ys, fold, num,
                             train_mask=train)
    if extra_folds is not None:
        extra = jnp.asarray(extra_folds, jnp.int32)
        if extra.shape != (n,):
            raise ValueError(f"extra_folds must have shape ({n},), got {extra.shape}")
        extra = jnp.concatenate([extra, jnp.full((xs.shape[0] - n,), -1, jnp.int32)])
        ed2, _ = kfold_error_data(cfg.predictor, cfg.features, k_extra, xs, ys, extra,
                                  int(num_extra_folds), train_mask=train)
        ed2 = ed2.replace(fold=jnp.where(ed2.fold >= 0, ed2.fold + num, -1))
        ed = concat_error_data(ed, ed2)
    return _fit_main_and_error(cfg, k_main, k_err, xs, ys, train, ed)


@functools.partial(jax.jit, static_argnums=(0,))
def _fit_main_and_error(cfg, k_main, k_err, xs, ys, train, ed):
    main = fit_predictor(cfg.predictor, k_main, xs, ys, train.astype(xs.dtype))
    ep = fit_error_predictor(cfg.error, k_err, ed)
    return DEUPState(main, ep, xs, train, ed)


def _check_types(v, cls, name="cfg"):
    if not isinstance(v, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {type(v).__name__}")


def deup_predict(cfg: DEUPConfig, state: DEUPState, xq: jax.Array,
                 key: jax.Array | None = None):
    """``(f(xq), e(phi(xq)), log_var)`` with ``phi`` relative to ``f``'s
    training set. ``e`` is on the raw loss scale; combine with
    :func:`epistemic_uncertainty`. ``key`` is needed for MC-dropout features."""
    _check_types(cfg, DEUPConfig)
    _check_types(state, DEUPState, "state")
    xq = as_float_array("xq", xq)
    if xq.ndim != 2 or xq.shape[1] != state.ref_x.shape[1]:
        raise ValueError(f"xq must be (Q, {state.ref_x.shape[1]}), got {xq.shape}")
    if cfg.predictor.mc_samples > 0 and key is None:
        raise ValueError("deup_predict needs a key when the predictor uses MC-dropout")
    return _predict_jit(cfg, state, xq, key)


@functools.partial(jax.jit, static_argnums=(0,))
def _predict_jit(cfg, state, xq, key):
    pred, log_var = predict(cfg.predictor, state.main_params, xq, key)
    phi = compute_features(cfg.features, xq, state.ref_x, state.ref_mask,
                           log_var if cfg.features.variance else None)
    return pred, predict_error(cfg.error, state.error, phi), log_var
