"""Small MLPs and their masked full-batch training through :mod:`gapjax.train`.

Every fit is a pure function ``fit(key, x, y, weights) -> params`` with a
per-example weight vector (0 = not in this model's training set). That is what
lets K fold models, ensemble members and seeds share one compiled program under
``jax.vmap``: they differ only in their keys and weight masks.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gapjax._checks import (as_float_array, check_choice, check_int, check_labels,
                            check_ndim, check_positive, check_same_leading)
from gapjax.train import init_train_state, scan_train_steps

_ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "silu": nn.silu, "gelu": nn.gelu}
_LOSSES = ("mse", "xent", "gauss_nll")


class MLP(nn.Module):
    """``x (N, D) -> (N, out)``; optional dropout after every hidden layer."""

    hidden: tuple[int, ...] = (64, 64)
    out: int = 1
    dropout: float = 0.0
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        act = _ACTIVATIONS[self.activation]
        for h in self.hidden:
            x = act(nn.Dense(h)(x))
            if self.dropout > 0:
                x = nn.Dropout(self.dropout, deterministic=deterministic)(x)
        return nn.Dense(self.out)(x)


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """Architecture and optimiser of one small MLP (hashable: a jit static).

    Attributes:
      hidden: hidden layer widths.
      activation: one of ``relu, tanh, silu, gelu``.
      dropout: dropout rate in [0, 1) (> 0 enables MC-dropout variances).
      steps: full-batch Adam(W) steps. Every step sees every (weighted) example:
        no one-minibatch "epochs" (a defect of the official code).
      lr: learning rate.
      weight_decay: decoupled weight decay (AdamW) if > 0.
    """

    hidden: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    dropout: float = 0.0
    steps: int = 500
    lr: float = 1e-3
    weight_decay: float = 0.0

    def __post_init__(self):
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, "
                             f"got {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if int(self.steps) < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be >= 1, got {self.hidden}")


def _module(cfg: MLPConfig, out: int) -> MLP:
    return MLP(hidden=tuple(cfg.hidden), out=out, dropout=cfg.dropout,
               activation=cfg.activation)


def _tx(cfg: MLPConfig):
    if cfg.weight_decay > 0:
        return optax.adamw(cfg.lr, weight_decay=cfg.weight_decay)
    return optax.adam(cfg.lr)


def pointwise_loss(kind: str, out: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example loss ``(N,)`` of network outputs ``out (N, k)``.

    ``mse``: ``(out[:, 0] - y)^2``; ``xent``: ``-log softmax(out)[y]``;
    ``gauss_nll``: Gaussian NLL with mean ``out[:, 0]`` and log-variance
    ``out[:, 1]`` (constant ``log 2 pi / 2`` dropped).
    """
    if kind == "mse":
        return jnp.square(out[:, 0] - y)
    if kind == "xent":
        check_labels("y", y, out.shape[-1])
        logp = jax.nn.log_softmax(out, axis=-1)
        return -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if kind == "gauss_nll":
        mean, log_var = out[:, 0], out[:, 1]
        return 0.5 * (log_var + jnp.square(y - mean) * jnp.exp(-log_var))
    raise ValueError(f"loss must be one of {_LOSSES}, got {kind!r}")


def fit_mlp(cfg: MLPConfig, key: jax.Array, x: jax.Array, y: jax.Array,
            weights: jax.Array, *, loss: str = "mse", out: int = 1,
            init_params=None, steps: int | None = None):
    """Trains one MLP on the weighted examples; returns its params.

    The objective is ``sum_i w_i l_i / sum_i w_i`` (full batch), minimised with
    ``cfg.steps`` steps of :func:`gapjax.train.train_step_fn` inside a
    ``lax.scan``. Rows with ``w_i = 0`` have no influence at all (their
    gradient is exactly zero), which is how fold models exclude their fold.

    Arguments:
      cfg: :class:`MLPConfig`.
      key: PRNG key (init and dropout).
      x: (N, D) inputs; y: (N,) targets (int labels for ``xent``).
      weights: (N,) non-negative example weights.
      loss: ``mse`` | ``xent`` | ``gauss_nll``.
      out: output width (classes for ``xent``, 2 for ``gauss_nll``).
      init_params: optional params to start from (warm start; fresh Adam state).
      steps: number of steps (default ``cfg.steps``).
    Returns:
      the trained ``params`` pytree. jit- and vmap-able over key/weights.
    """
    check_choice("loss", loss, _LOSSES)
    out = check_int("out", out, min=1)
    x = as_float_array("x", x, ndim=2, min_size=1)
    if loss == "xent":
        check_labels("y", y, out, ndim=1)
    else:
        y = as_float_array("y", y, ndim=1, dtype=x.dtype)
    weights = check_positive("weights", as_float_array("weights", weights, ndim=1),
                             allow_zero=True)
    check_same_leading(x=x, y=y, weights=weights)
    model = _module(cfg, out)
    tx = _tx(cfg)
    w = weights.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(w), 1e-12)

    def loss_fn(params, collections, batch, key):
        bx, by = batch
        o = model.apply({"params": params}, bx, deterministic=cfg.dropout == 0,
                        rngs={"dropout": key})
        lval = jnp.sum(w * pointwise_loss(loss, o, by)) / denom
        return lval, (collections, {})

    if init_params is None:
        init_fn = lambda k: model.init(k, x[:1])
    else:
        init_fn = lambda k: {"params": init_params}
    state = init_train_state(key, init_fn, tx)
    state, _ = scan_train_steps(loss_fn, tx, state, lambda t: (x, y),
                                int(cfg.steps if steps is None else steps))
    return state.params


def apply_mlp(cfg: MLPConfig, params, x: jax.Array, *, out: int = 1,
              key: jax.Array | None = None) -> jax.Array:
    """Network outputs ``(N, out)``; deterministic unless ``key`` is given
    (then one dropout sample)."""
    check_ndim("x", x, ndim=2)
    model = _module(cfg, out)
    if key is None:
        return model.apply({"params": params}, x, deterministic=True)
    return model.apply({"params": params}, x, deterministic=False, rngs={"dropout": key})


def mc_dropout_outputs(cfg: MLPConfig, params, x: jax.Array, key: jax.Array,
                       num_samples: int, *, out: int = 1) -> jax.Array:
    """``(T, N, out)`` outputs under ``T = num_samples`` dropout masks."""
    if cfg.dropout <= 0:
        raise ValueError("MC-dropout needs cfg.dropout > 0")
    keys = jax.random.split(key, int(num_samples))
    return jax.vmap(lambda k: apply_mlp(cfg, params, x, out=out, key=k))(keys)


def fit_ensemble(cfg: MLPConfig, key: jax.Array, x, y, weights, num_members: int,
                 *, loss: str = "mse", out: int = 1, init_params=None,
                 steps: int | None = None):
    """``num_members`` independently initialised MLPs (vmapped); stacked params.
    ``init_params`` (stacked) warm-starts every member."""
    check_int("num_members", num_members, min=1)
    keys = jax.random.split(key, int(num_members))
    if init_params is None:
        return jax.vmap(lambda k: fit_mlp(cfg, k, x, y, weights, loss=loss, out=out,
                                          steps=steps))(keys)
    return jax.vmap(lambda k, p0: fit_mlp(cfg, k, x, y, weights, loss=loss, out=out,
                                          init_params=p0, steps=steps))(keys, init_params)


def apply_ensemble(cfg: MLPConfig, params, x, *, out: int = 1) -> jax.Array:
    """``(M, N, out)`` outputs of stacked ensemble params."""
    return jax.vmap(lambda p: apply_mlp(cfg, p, x, out=out))(params)


LOG_EPS = 1e-12


def log_variance(samples: jax.Array, axis: int = 0) -> jax.Array:
    """``log(var + 1e-12)`` across ``axis`` (ensemble members / dropout masks).

    For ``(S, N)`` samples returns ``(N,)``; for ``(S, N, C)`` probabilities the
    class variances are summed first (total variance).
    """
    check_ndim("samples", samples, ndim=(2, 3))
    if not -jnp.ndim(samples) <= axis < jnp.ndim(samples):
        raise ValueError(f"axis={axis} is out of range for samples of rank "
                         f"{jnp.ndim(samples)}")
    v = jnp.var(samples, axis=axis)
    if v.ndim == 2:
        v = jnp.sum(v, axis=-1)
    return jnp.log(v + LOG_EPS)
