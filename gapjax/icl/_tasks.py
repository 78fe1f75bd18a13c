"""Task and prompt samplers for in-context linear regression with noise.

Every sampler is a pure function of an explicit PRNG key; batches are vmapped
over tasks. A task is a pair ``(w, sigma)``; a prompt is ``T`` pairs
``(x_t, y_t)`` with ``y_t = w^T x_t + sigma * eps_t``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from gapjax._checks import check_int, check_positive

COVARIATES = ("isotropic", "diag_uniform", "scaled", "rotated_diag")


@dataclasses.dataclass(frozen=True)
class NormalGammaPrior:
    """Normal-Gamma prior on a task ``(w, sigma)``.

    ``tau = 1 / sigma^2 ~ Gamma(shape=a0, rate=b0)`` and
    ``w | sigma ~ N(mu0 * 1_d, sigma^2 I_d)``.

    Attributes:
      a0: Gamma shape (> 0; > 1 for a finite ``E[sigma^2] = b0 / (a0 - 1)``).
      b0: Gamma rate (> 0).
      mu0: prior mean of every weight (the paper uses 1, the all-ones vector).
    """

    a0: float = 20.0
    b0: float = 20.0
    mu0: float = 1.0

    def __post_init__(self):
        for name in ("a0", "b0"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.floating, np.integer)) or isinstance(v, bool):
                raise TypeError(f"{name} must be a Python/NumPy number, got {type(v).__name__}")
            if not math.isfinite(float(v)) or float(v) <= 0:
                raise ValueError(f"Gamma parameter {name} must be a finite positive number, "
                                 f"got {v}")
        if not math.isfinite(float(self.mu0)):
            raise ValueError(f"mu0 must be finite, got {self.mu0}")
        object.__setattr__(self, "a0", float(self.a0))
        object.__setattr__(self, "b0", float(self.b0))
        object.__setattr__(self, "mu0", float(self.mu0))

    @property
    def mean_sigma2(self) -> float:
        """``E[sigma^2] = b0 / (a0 - 1)`` (inf if ``a0 <= 1``)."""
        return self.b0 / (self.a0 - 1.0) if self.a0 > 1 else math.inf


# Task shifts of the paper (Gamma prior on tau; w | sigma ~ N(1, sigma^2 I)).
TASK_SHIFTS = {
    "S-OOD": NormalGammaPrior(80.0, 20.0),     # sigma ~ 0.5
    "ID": NormalGammaPrior(20.0, 20.0),        # sigma ~ 1 (training prior)
    "M-OOD": NormalGammaPrior(100.0, 400.0),   # sigma ~ 2
    "L-OOD": NormalGammaPrior(100.0, 1600.0),  # sigma ~ 4
}


def _check_pos_int(name, v):
    return check_int(name, v, min=1)


def sample_tasks(key: jax.Array, num_tasks: int, dim: int,
                 prior: NormalGammaPrior = NormalGammaPrior()) -> tuple[jax.Array, jax.Array]:
    """Draws ``num_tasks`` tasks from the Normal-Gamma prior.

    Returns:
      ``(w, sigma)`` of shapes ``(num_tasks, dim)`` and ``(num_tasks,)``.
    """
    num_tasks, dim = _check_pos_int("num_tasks", num_tasks), _check_pos_int("dim", dim)
    if not isinstance(prior, NormalGammaPrior):
        raise TypeError(f"prior must be a NormalGammaPrior, got {type(prior).__name__}")
    k_tau, k_w = jax.random.split(key)
    tau = jax.random.gamma(k_tau, prior.a0, (num_tasks,)) / prior.b0
    sigma = jax.lax.rsqrt(tau)
    w = prior.mu0 + sigma[:, None] * jax.random.normal(k_w, (num_tasks, dim))
    return w, sigma


def make_pool(key: jax.Array, pool_size: int, dim: int,
              prior: NormalGammaPrior = NormalGammaPrior()) -> tuple[jax.Array, jax.Array]:
    """A finite pool of ``pool_size`` tasks drawn once from the prior.

    Training prompts then pick a task uniformly from the pool (in-weight
    learning becomes possible for small pools). Same shapes as
    :func:`sample_tasks`.
    """
    return sample_tasks(key, pool_size, dim, prior)


def sample_covariates(key: jax.Array, num_tasks: int, length: int, dim: int,
                      covariates: str = "isotropic", scale: float = 2.0) -> jax.Array:
    """Covariates ``x`` of shape ``(num_tasks, length, dim)``.

    Arguments:
      covariates: ``"isotropic"`` ``x ~ N(0, I)``; ``"diag_uniform"``
        ``x ~ N(0, diag(c))`` with ``c_i ~ U[0, 2]`` drawn per task;
        ``"scaled"`` ``x ~ N(0, scale^2 I)``; ``"rotated_diag"``
        ``x ~ N(0, Q diag(c) Q^T)`` with a per-task random rotation ``Q``.
      scale: the standard-deviation factor of ``"scaled"``.
    """
    if covariates not in COVARIATES:
        raise ValueError(f"covariates must be one of {COVARIATES}, got {covariates!r}")
    num_tasks, length = _check_pos_int("num_tasks", num_tasks), _check_pos_int("length", length)
    dim = _check_pos_int("dim", dim)
    k_z, k_c, k_q = jax.random.split(key, 3)
    z = jax.random.normal(k_z, (num_tasks, length, dim))
    if covariates == "isotropic":
        return z
    if covariates == "scaled":
        return scale * z
    c = jax.random.uniform(k_c, (num_tasks, 1, dim), minval=0.0, maxval=2.0)
    x = z * jnp.sqrt(c)
    if covariates == "diag_uniform":
        return x
    q = jax.vmap(lambda k: jnp.linalg.qr(jax.random.normal(k, (dim, dim)))[0])(
        jax.random.split(k_q, num_tasks))
    return jnp.einsum("ntj,nij->nti", x, q)


def sample_prompts(key: jax.Array, w: jax.Array, sigma: jax.Array, length: int,
                   covariates: str = "isotropic", scale: float = 2.0) -> tuple[jax.Array, jax.Array]:
    """Prompts for given tasks.

    Arguments:
      w: ``(N, d)`` weights; sigma: ``(N,)`` noise levels.
      length: number of ``(x, y)`` pairs ``T``.
    Returns:
      ``xs (N, T, d)``, ``ys (N, T)`` with ``y = w^T x + sigma * eps``.
    """
    check_positive("sigma", sigma)
    length = _check_pos_int("length", length)
    if w.ndim != 2 or sigma.shape != w.shape[:1]:
        raise ValueError(f"w must be (N, d) and sigma (N,), got {w.shape} and {sigma.shape}")
    k_x, k_e = jax.random.split(key)
    n, d = w.shape
    xs = sample_covariates(k_x, n, length, d, covariates, scale)
    ys = jnp.einsum("ntd,nd->nt", xs, w) + sigma[:, None] * jax.random.normal(k_e, (n, length))
    return xs, ys


def sample_batch(key: jax.Array, batch_size: int, length: int, dim: int,
                 prior: NormalGammaPrior = NormalGammaPrior(), *, pool=None,
                 covariates: str = "isotropic", scale: float = 2.0) -> dict:
    """One batch of prompts: fresh tasks from ``prior`` or tasks from ``pool``.

    Arguments:
      pool: optional ``(w (P, d), sigma (P,))`` from :func:`make_pool`; tasks are
        drawn uniformly from it (``prior`` is then unused).
    Returns:
      dict ``xs (B, T, d)``, ``ys (B, T)``, ``w (B, d)``, ``sigma (B,)``.
    """
    batch_size = _check_pos_int("batch_size", batch_size)
    k_task, k_prompt = jax.random.split(key)
    if pool is None:
        w, sigma = sample_tasks(k_task, batch_size, dim, prior)
    else:
        pw, ps = pool
        if pw.ndim != 2 or pw.shape[1] != dim or ps.shape != pw.shape[:1]:
            raise ValueError(f"pool must be (w (P, {dim}), sigma (P,)), got "
                             f"{pw.shape}, {ps.shape}")
        idx = jax.random.randint(k_task, (batch_size,), 0, pw.shape[0])
        w, sigma = pw[idx], ps[idx]
    xs, ys = sample_prompts(k_prompt, w, sigma, length, covariates, scale)
    return {"xs": xs, "ys": ys, "w": w, "sigma": sigma}


def make_batch_fn(batch_size: int, length: int, dim: int,
                  prior: NormalGammaPrior = NormalGammaPrior(), *, pool=None,
                  covariates: str = "isotropic", loss_mask=None):
    """``(key, step) -> batch``: the batch of ``step`` is ``sample_batch(fold_in(key, step))``.

    Pure and jittable, so a resumed run sees exactly the batches of a straight
    run. With ``loss_mask`` (shape ``(T,)``) the batch carries ``mask (B, T)``.
    """
    _check_pos_int("batch_size", batch_size), _check_pos_int("length", length)
    _check_pos_int("dim", dim)
    if loss_mask is not None:
        loss_mask = jnp.asarray(loss_mask, jnp.float32)
        if loss_mask.shape != (length,):
            raise ValueError(f"loss_mask must have shape ({length},), got {loss_mask.shape}")

    def batch_fn(key, step):
        b = sample_batch(jax.random.fold_in(key, step), batch_size, length, dim, prior,
                         pool=pool, covariates=covariates)
        out = {"xs": b["xs"], "ys": b["ys"]}
        if loss_mask is not None:
            out["mask"] = jnp.broadcast_to(loss_mask, (batch_size, length))
        return out

    return batch_fn


def prompt_length_mask(length: int, train_length: int) -> jax.Array:
    """Per-position loss mask ``(T,)``: 1 on positions ``< train_length``, else 0."""
    length = _check_pos_int("length", length)
    train_length = _check_pos_int("train_length", train_length)
    if train_length > length:
        raise ValueError(f"train_length ({train_length}) must be <= length ({length})")
    return (jnp.arange(length) < train_length).astype(jnp.float32)
