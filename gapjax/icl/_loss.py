"""Gaussian NLL training objective with per-position loss masks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gapjax._checks import check_int, check_positive, check_same_shape

VAR_FLOOR = 1e-2
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_nll(mu, var, y, var_floor: float = VAR_FLOOR):
    """Elementwise Gaussian NLL in nats, variance floored at ``var_floor``.

    ``0.5 log(2 pi v) + (y - mu)^2 / (2 v)`` with ``v = max(var, var_floor)``
    (the paper's ``log sigma_hat + (y - mu_hat)^2 / (2 sigma_hat^2)`` plus the
    constant ``0.5 log 2 pi``, so values are comparable to proper densities).
    ``mu``, ``var``, ``y`` of one shape.
    """
    check_same_shape(mu=mu, var=var, y=y)
    check_positive("var_floor", var_floor, allow_zero=True)
    v = jnp.maximum(var, var_floor)
    return _HALF_LOG_2PI + 0.5 * jnp.log(v) + 0.5 * jnp.square(y - mu) / v


def make_loss_fn(model, loss_mask=None, var_floor: float = VAR_FLOOR):
    """``loss_fn(params, collections, batch, key) -> (loss, (collections, aux))``.

    The loss is the Gaussian NLL averaged over tasks and the positions where
    the mask is 1. The mask is ``batch["mask"] (B, T)`` if present, else
    ``loss_mask (T,)``, else all ones. ``aux`` holds the masked ``mse`` and
    the mean predicted ``sigma``.
    """
    if loss_mask is not None:
        loss_mask = jnp.asarray(loss_mask, jnp.float32)
        if loss_mask.ndim != 1:
            raise ValueError(f"loss_mask must have shape (T,), got {loss_mask.shape}")

    def loss_fn(params, collections, batch, key):
        del key
        xs, ys = batch["xs"], batch["ys"]
        mu, sigma = model.apply({"params": params, **collections}, xs, ys)
        nll = gaussian_nll(mu, jnp.square(sigma), ys, var_floor)
        if "mask" in batch:
            m = batch["mask"].astype(nll.dtype)
        elif loss_mask is not None:
            if loss_mask.shape[0] != ys.shape[1]:
                raise ValueError(f"loss_mask has {loss_mask.shape[0]} positions, prompts "
                                 f"have {ys.shape[1]}")
            m = jnp.broadcast_to(loss_mask, nll.shape)
        else:
            m = jnp.ones_like(nll)
        denom = jnp.maximum(m.sum(), 1.0)
        loss = (nll * m).sum() / denom
        aux = {"mse": (jnp.square(ys - mu) * m).sum() / denom,
               "sigma_mean": (sigma * m).sum() / denom}
        return loss, (collections, aux)

    return loss_fn


def make_eval_fn(model, var_floor: float = VAR_FLOOR):
    """``eval_fn(params, collections, batch) -> {"nll", "mse"}`` over all positions."""

    def eval_fn(params, collections, batch):
        mu, sigma = model.apply({"params": params, **collections}, batch["xs"], batch["ys"])
        nll = gaussian_nll(mu, jnp.square(sigma), batch["ys"], var_floor)
        return {"nll": nll.mean(), "mse": jnp.square(batch["ys"] - mu).mean()}

    return eval_fn


def predict(model, params, xs, ys, batch_size: int = 512):
    """Model predictions ``(mu, var)`` for many prompts, in jitted chunks."""
    batch_size = check_int("batch_size", batch_size, min=1)
    fn = jax.jit(lambda p, x, y: model.apply({"params": p}, x, y))
    mus, vs = [], []
    for i in range(0, xs.shape[0], batch_size):
        mu, s = fn(params, xs[i:i + batch_size], ys[i:i + batch_size])
        mus.append(mu)
        vs.append(jnp.square(s))
    return jnp.concatenate(mus), jnp.concatenate(vs)
