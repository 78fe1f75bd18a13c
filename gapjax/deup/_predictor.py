"""The main predictor ``f``: an MLP, a deep ensemble, or an MC-dropout MLP.

A :class:`Predictor` is a hashable description; :func:`fit_predictor` and
:func:`predict` are pure functions of it, so fold models / seeds are vmapped.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from gapjax._checks import (as_float_array, check_labels, check_ndim, check_same_leading,
                            check_shape)
from gapjax.deup._fit import (MLPConfig, apply_ensemble, fit_ensemble, log_variance,
                              mc_dropout_outputs)

_TASKS = ("regression", "classification")


@dataclasses.dataclass(frozen=True)
class Predictor:
    """Main predictor description.

    Attributes:
      mlp: :class:`MLPConfig` of every member.
      task: ``regression`` (squared loss, scalar output) or ``classification``
        (log loss, ``num_classes`` logits).
      num_classes: number of classes (classification only).
      num_members: > 1 gives a deep ensemble; ``f`` is the member average (of
        probabilities for classification) and the variance feature is the
        across-member variance.
      mc_samples: > 0 (with ``mlp.dropout > 0``) gives the MC-dropout variance
        as the variance feature (``f`` itself stays the deterministic net).
    """

    mlp: MLPConfig = MLPConfig()
    task: str = "regression"
    num_classes: int = 0
    num_members: int = 1
    mc_samples: int = 0

    def __post_init__(self):
        if self.task not in _TASKS:
            raise ValueError(f"task must be one of {_TASKS}, got {self.task!r}")
        if self.task == "classification" and int(self.num_classes) < 2:
            raise ValueError(f"classification needs num_classes >= 2, got {self.num_classes}")
        if int(self.num_members) < 1:
            raise ValueError(f"num_members must be >= 1, got {self.num_members}")
        if int(self.mc_samples) < 0:
            raise ValueError(f"mc_samples must be >= 0, got {self.mc_samples}")
        if self.mc_samples > 0 and self.mlp.dropout <= 0:
            raise ValueError("mc_samples > 0 needs mlp.dropout > 0")

    @property
    def out(self) -> int:
        return int(self.num_classes) if self.task == "classification" else 1

    @property
    def loss(self) -> str:
        return "xent" if self.task == "classification" else "mse"

    @property
    def has_variance(self) -> bool:
        return self.num_members > 1 or self.mc_samples > 0


def init_predictor(p: Predictor, key: jax.Array, x: jax.Array):
    """Freshly initialised params, stacked over members (for warm starts)."""
    check_ndim("x", x, ndim=2)
    from gapjax.deup._fit import _module

    keys = jax.random.split(key, int(p.num_members))
    return jax.vmap(lambda k: _module(p.mlp, p.out).init(k, x[:1])["params"])(keys)


def fit_predictor(p: Predictor, key: jax.Array, x: jax.Array, y: jax.Array,
                  weights: jax.Array, *, init_params=None, steps: int | None = None):
    """Trains ``f`` on the weighted examples; params stacked over members
    (leading axis ``num_members``, also when it is 1). ``init_params`` (from a
    previous fit) warm-starts it for ``steps`` steps (default ``mlp.steps``)."""
    if p.task == "classification":
        check_labels("y", y, p.num_classes, ndim=1)
    return fit_ensemble(p.mlp, key, x, y, weights, p.num_members, loss=p.loss, out=p.out,
                        init_params=init_params, steps=steps)


def _to_pred(p: Predictor, o: jax.Array) -> jax.Array:
    return jax.nn.softmax(o, -1) if p.task == "classification" else o[..., 0]


def predict(p: Predictor, params, x: jax.Array, key: jax.Array | None = None):
    """``f(x)`` and the model log-variance.

    Returns:
      ``(pred, log_var)``: ``pred`` is (N,) for regression or (N, C)
      probabilities for classification; ``log_var`` is (N,) (zeros when the
      predictor has no variance source). ``key`` is needed for MC-dropout.
    """
    member = _to_pred(p, apply_ensemble(p.mlp, params, x, out=p.out))  # (M, N[, C])
    pred = jnp.mean(member, axis=0)
    if p.num_members > 1:
        log_var = log_variance(member, axis=0)
    elif p.mc_samples > 0:
        if key is None:
            raise ValueError("predict needs a key for MC-dropout (mc_samples > 0)")
        single = jax.tree.map(lambda a: a[0], params)
        samples = _to_pred(p, mc_dropout_outputs(p.mlp, single, x, key, p.mc_samples,
                                                 out=p.out))
        log_var = log_variance(samples, axis=0)
    else:
        log_var = jnp.zeros(x.shape[:1], x.dtype)
    return pred, log_var


def loss_of(p: Predictor, pred: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example loss of predictions: squared error, or ``-log f(y|x)``."""
    pred = as_float_array("pred", pred, ndim=2 if p.task == "classification" else 1)
    if p.task == "classification":
        check_labels("y", y, p.num_classes, ndim=1)
        check_shape("pred", pred, (None, p.num_classes), "(N, num_classes)")
        check_same_leading(pred=pred, y=y)
        py = jnp.take_along_axis(pred, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
        return -jnp.log(jnp.maximum(py, 1e-12))
    y = as_float_array("y", y, ndim=1)
    check_same_leading(pred=pred, y=y)
    return jnp.square(pred - y)
