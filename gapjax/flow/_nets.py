"""Velocity networks and the contracting residual (linen modules).

Every module has the call signature ``module.apply(variables, x, t, c=None)``:

* ``x``: (B, D) vectors or (B, 8, 8) / (B, 8, 8, 1) images, floating;
* ``t``: scalar or (B,) times in [0, 1];
* ``c``: optional conditioning, (B,) int class labels (``num_classes`` set) or
  (B, C) float vectors (states for policies).

and returns a velocity with the shape of ``x``.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gapjax._checks import check_int, check_positive
def _check_inputs(x, t, c, *, num_classes, image: bool):
    if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
        raise TypeError(f"x must be a floating array, got dtype {x.dtype}")
    if image:
        if x.ndim not in (3, 4) or x.shape[1:3] != (8, 8) or (x.ndim == 4 and x.shape[3] != 1):
            raise ValueError(f"x must be (B, 8, 8) or (B, 8, 8, 1) images, got shape {x.shape}")
    elif x.ndim != 2:
        raise ValueError(f"x must be (B, D), got shape {x.shape}")
    b = x.shape[0]
    t = jnp.asarray(t)
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != b):
        raise ValueError(f"t must be a scalar or shape ({b},), got shape {t.shape}")
    if c is not None:
        c = jnp.asarray(c)
        if num_classes is not None:
            if c.shape != (b,) or not jnp.issubdtype(c.dtype, jnp.integer):
                raise ValueError(f"c must be ({b},) integer class labels, got "
                                 f"shape {c.shape} dtype {c.dtype}")
        elif c.ndim != 2 or c.shape[0] != b:
            raise ValueError(f"c must be ({b}, C) conditioning vectors, got shape {c.shape}")
    elif num_classes is not None:
        raise ValueError("this network is class-conditional (num_classes set): pass c")
    return jnp.broadcast_to(t.astype(x.dtype), (b,)), c


def time_embedding(t: jax.Array, dim: int, max_freq: float = 100.0) -> jax.Array:
    """Sinusoidal embedding of times ``t`` (B,) in [0, 1] -> (B, dim).

    Angular frequencies are geometric between 1 and ``max_freq``.
    """
    dim = check_int("dim", dim, min=2)
    if dim % 2:
        raise ValueError(f"time embedding dim must be even, got {dim}")
    half = dim // 2
    freqs = jnp.exp(jnp.linspace(0.0, math.log(max_freq), half, dtype=t.dtype))
    ang = t[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=-1)


class _CondEmbed(nn.Module):
    """(t, c) -> (B, features) embedding shared by the networks."""

    features: int
    time_dim: int = 32
    num_classes: int | None = None

    @nn.compact
    def __call__(self, t, c):
        h = time_embedding(t, self.time_dim)
        if c is not None:
            if self.num_classes is not None:
                h = jnp.concatenate([h, nn.Embed(self.num_classes, self.time_dim)(c)], -1)
            else:
                h = jnp.concatenate([h, c.astype(h.dtype)], -1)
        h = nn.silu(nn.Dense(self.features)(h))
        return nn.Dense(self.features)(h)


class VelocityMLP(nn.Module):
    """MLP velocity ``v(x, t[, c])`` for vectors; (B, D) -> (B, D).

    Time enters through a sinusoidal embedding; a class label through a learned
    embedding, a conditioning vector (e.g. a policy's state) by concatenation.
    """

    features: Sequence[int] = (128, 128, 128)
    time_dim: int = 32
    num_classes: int | None = None

    @nn.compact
    def __call__(self, x, t, c=None):
        t, c = _check_inputs(x, t, c, num_classes=self.num_classes, image=False)
        e = _CondEmbed(self.features[0], self.time_dim, self.num_classes)(t, c)
        h = nn.Dense(self.features[0])(x) + e
        h = nn.silu(h)
        for f in self.features[1:]:
            h = nn.silu(nn.Dense(f)(h) + nn.Dense(f)(e))
        return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(h)


class VelocityConv(nn.Module):
    """Small conv velocity net for 8x8 images; (B, 8, 8[, 1]) -> same shape.

    Three 3x3 conv blocks with the (t, c) embedding added per channel, a 1x1
    output convolution.
    """

    channels: int = 32
    num_blocks: int = 3
    time_dim: int = 32
    num_classes: int | None = None

    @nn.compact
    def __call__(self, x, t, c=None):
        t, c = _check_inputs(x, t, c, num_classes=self.num_classes, image=True)
        squeeze = x.ndim == 3
        h = x[..., None] if squeeze else x
        e = _CondEmbed(self.channels, self.time_dim, self.num_classes)(t, c)
        h = nn.Conv(self.channels, (3, 3))(h)
        for _ in range(self.num_blocks):
            g = nn.GroupNorm(num_groups=min(8, self.channels))(h)
            g = nn.silu(g + nn.Dense(self.channels)(e)[:, None, None, :])
            h = h + nn.Conv(self.channels, (3, 3))(g)
        out = nn.Conv(1, (1, 1), kernel_init=nn.initializers.zeros)(nn.silu(h))
        return out[..., 0] if squeeze else out


def _spectral_bound(w, norm: str):
    """An upper bound on ``||w||_2``: exact (``"svd"``) or ``sqrt(||w||_1 ||w||_inf)``
    (``"holder"``, Hoelder's bound; cheap and differentiable without SVD)."""
    if norm == "svd":
        return jnp.linalg.norm(w, ord=2)
    if norm == "holder":
        return jnp.sqrt(jnp.max(jnp.sum(jnp.abs(w), 0)) * jnp.max(jnp.sum(jnp.abs(w), 1)))
    raise ValueError(f"norm must be 'holder' or 'svd', got {norm!r}")


class ContractingResidual(nn.Module):
    """Residual ``r(x, t[, c])`` whose Jacobian satisfies ``sym(J_x r) <= -rate * I``.

    ``r(x, t, c) = -(rate + a) x + a * rho * h(x, t, c) + b(t, c)`` with
    ``a = softplus(.) >= 0``, ``rho = sigmoid(.) in (0, 1)``, and ``h`` an MLP in
    ``x`` whose weight matrices are divided by an upper bound of their spectral
    norm (``norm="holder"``: ``sqrt(||W||_1 ||W||_inf)``, or ``"svd"``: exact) and
    whose activations (tanh) are 1-Lipschitz, so ``||J_x h|| <= 1``; time and
    conditioning enter ``h`` and ``b`` only additively. Hence
    ``sym(J_x r) <= (-(rate + a) + a * rho) I <= -rate I`` for every input: a
    contraction with guaranteed rate ``rate`` by construction (ResFT-FM).
    Initialisation: the weights of ``h`` are identity (padded) matrices, its
    input is divided and output multiplied by ``scale`` (Lipschitz-neutral), and
    the additive terms are zero, so ``h(x) ~ x`` for ``|x| << scale`` and the
    residual starts near ``-(rate + a_init (1 - rho_init)) x`` -- close to the
    least intrusive contracting residual. Images are flattened.

    ``linear=True`` adds a learned linear part ``A x`` with
    ``A = -L L^T + (K - K^T)`` (both zero at init): ``sym(A) = -L L^T <= 0``, so
    the rate bound is unchanged while ``A`` can rotate (skew part) and contract
    anisotropically. :func:`lmi_certificate` checks the LMI
    ``A^T P + P A + 2 c P <= 0`` numerically; :func:`residual_linear_matrix`
    reads ``A`` from the parameters.
    """

    rate: float = 0.1
    features: Sequence[int] = (64, 64)
    time_dim: int = 32
    num_classes: int | None = None
    a_init: float = 0.5
    rho_init: float = 0.99
    scale: float = 30.0
    norm: str = "holder"
    linear: bool = False

    @nn.compact
    def __call__(self, x, t, c=None):
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if not (self.a_init > 0 and 0 < self.rho_init < 1):
            raise ValueError(f"need a_init > 0 and rho_init in (0, 1), got "
                             f"{self.a_init}, {self.rho_init}")
        image = x.ndim in (3, 4) and x.shape[1:3] == (8, 8)
        t, c = _check_inputs(x, t, c, num_classes=self.num_classes, image=image)
        shape = x.shape
        xf = x.reshape(shape[0], -1)
        d = xf.shape[1]
        e = _CondEmbed(self.features[0], self.time_dim, self.num_classes)(t, c)
        h = _unit_lipschitz(self, xf, e, self.features, self.scale, self.norm)
        a_raw0 = math.log(math.expm1(self.a_init))
        rho_raw0 = math.log(self.rho_init / (1 - self.rho_init))
        a = nn.softplus(self.param("a_raw", nn.initializers.constant(a_raw0), (), x.dtype))
        rho = nn.sigmoid(self.param("rho_raw", nn.initializers.constant(rho_raw0), (), x.dtype))
        bias = nn.Dense(d, kernel_init=nn.initializers.zeros)(e)
        r = -(self.rate + a) * xf + a * rho * h + bias
        if self.linear:
            zeros = nn.initializers.zeros
            r = r + xf @ residual_linear_matrix(
                {"lin_L": self.param("lin_L", zeros, (d, d), x.dtype),
                 "lin_K": self.param("lin_K", zeros, (d, d), x.dtype)}).T
        return r.reshape(shape)


def window_envelope(lambda_pre: jax.Array, t: jax.Array, t_c: float, t_e: float) -> jax.Array:
    """Upper envelope of a bound table on the window: ``lambda_pre`` (K,) holds
    bounds at the K times ``linspace(t_c, t_e, K)``; at ``t`` (B,) in
    ``[t_j, t_{j+1}]`` it returns ``max(lambda_pre[j], lambda_pre[j+1])`` (B,)."""
    k = lambda_pre.shape[0]
    if k < 2:
        raise ValueError(f"lambda_pre must hold >= 2 window times, got shape {lambda_pre.shape}")
    u = (t - t_c) / (t_e - t_c) * (k - 1)
    j = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, k - 2)
    return jnp.maximum(lambda_pre[j], lambda_pre[j + 1])


class LateContractingResidual(nn.Module):
    """ResFT-FM residual whose *combined* field ``v_pre + r`` contracts on ``[t_c, t_e]``.

    ``r(x, t, c) = -w(t) [beta v_pre(x, t) + kappa(t, c) x] + L(t, c) h(x, t, c) + b(t, c)``

    with ``w(t) = 1`` on the window ``t_c <= t <= t_e`` and 0 elsewhere, ``h`` a
    1-Lipschitz network in ``x`` (weights divided by a spectral-norm bound, tanh,
    time/conditioning additive; ``||J_x h|| <= 1``) and ``b`` independent of x:

    * outside the window ``r = L h + b`` with ``L = free_lip * sigmoid(.) <
      free_lip``: free, ``free_lip``-Lipschitz (it can expand, as few-step Euler
      needs);
    * inside, ``kappa = (1 - beta) lambda_pre(t) + rate + a`` and ``L = rho a``
      (``a = softplus(.) >= 0``, ``rho`` in (0, 1)), so for any x where
      ``sym J_x v_pre <= lambda_pre(t) I``
      ``sym J_x (v_pre + r) = (1 - beta) sym J_x v_pre - kappa I + L sym J_x h
      <= -(rate + (1 - rho) a) I <= -rate I``: the combined field contracts at
      rate ``rate`` (Lohmiller & Slotine 1998).

    ``beta`` in [0, 1] is a static design choice: ``beta = 0`` is the gain
    design ``r = -kappa x + g`` whose certificate rests on the table
    ``lambda_pre`` (bounds of ``max eig sym J v_pre`` measured along
    trajectories, :func:`gapjax.flow.estimate_lambda_pre`) and holds only where
    that bound does; ``beta = 1`` removes ``v_pre`` on the window, so the
    combined field there is ``-kappa x + L h + b`` with ``kappa = rate + a`` and
    the certificate holds for every x, with no estimate (``lambda_pre`` unused).

    Call as ``apply(variables, x, t, c=None, v_pre=..., lambda_pre=None)``:
    ``v_pre`` (B, ...) is ``v_pre(x, t)`` evaluated on the *same* traced ``x``
    (so Jacobians see it; :func:`gapjax.flow.late_residual_field` does this);
    ``lambda_pre`` (K,) bounds at ``linspace(t_c, t_e, K)`` (required when
    ``beta < 1``, see :func:`window_envelope`). ``return_gains=True`` returns
    ``{"kappa", "lip_g", "window"}`` (B,) instead of ``r``.
    """

    rate: float = 0.5
    t_c: float = 0.5
    t_e: float = 1.0
    beta: float = 1.0
    free_lip: float = 10.0
    free_init: float = 0.01
    a_init: float = 0.5
    rho_init: float = 0.9
    features: Sequence[int] = (64, 64)
    time_dim: int = 32
    num_classes: int | None = None
    scale: float = 30.0
    norm: str = "holder"

    @nn.compact
    def __call__(self, x, t, c=None, v_pre=None, lambda_pre=None, return_gains=False):
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if not 0.0 <= self.t_c < self.t_e <= 1.0:
            raise ValueError(f"need 0 <= t_c < t_e <= 1, got t_c={self.t_c}, t_e={self.t_e}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if not (self.free_lip > 0 and 0 < self.free_init < self.free_lip and self.a_init > 0
                and 0 < self.rho_init < 1):
            raise ValueError("need free_lip > 0, 0 < free_init < free_lip, a_init > 0 and "
                             f"rho_init in (0, 1), got {self.free_lip}, {self.free_init}, "
                             f"{self.a_init}, {self.rho_init}")
        if v_pre is None or jnp.shape(v_pre) != jnp.shape(x):
            raise ValueError(f"v_pre must be v_pre(x, t) with the shape of x {jnp.shape(x)}, "
                             f"got {None if v_pre is None else jnp.shape(v_pre)}")
        if self.beta < 1 and lambda_pre is None:
            raise ValueError("beta < 1 needs lambda_pre, the (K,) bounds of max eig sym J "
                             "v_pre on the window (see estimate_lambda_pre)")
        image = x.ndim in (3, 4) and x.shape[1:3] == (8, 8)
        t, c = _check_inputs(x, t, c, num_classes=self.num_classes, image=image)
        shape = x.shape
        xf = x.reshape(shape[0], -1)
        d = xf.shape[1]
        e = _CondEmbed(self.features[0], self.time_dim, self.num_classes)(t, c)
        h = _unit_lipschitz(self, xf, e, self.features, self.scale, self.norm)
        zeros = nn.initializers.zeros
        free_raw0 = math.log(self.free_init / (self.free_lip - self.free_init))
        a_raw0 = math.log(math.expm1(self.a_init))
        rho_raw0 = math.log(self.rho_init / (1 - self.rho_init))
        free = self.free_lip * nn.sigmoid(
            nn.Dense(1, kernel_init=zeros, bias_init=nn.initializers.constant(free_raw0),
                     name="free_gain")(e)[:, 0])
        a = nn.softplus(nn.Dense(1, kernel_init=zeros,
                                 bias_init=nn.initializers.constant(a_raw0),
                                 name="window_gain")(e)[:, 0])
        rho = nn.sigmoid(self.param("rho_raw", nn.initializers.constant(rho_raw0), (),
                                    x.dtype))
        inside = (t >= self.t_c) & (t <= self.t_e)
        lam = (jnp.zeros_like(t) if self.beta == 1 else
               window_envelope(jnp.asarray(lambda_pre, x.dtype), t, self.t_c, self.t_e))
        kappa = jnp.where(inside, (1 - self.beta) * lam + self.rate + a, 0.0)
        lip = jnp.where(inside, rho * a, free)
        if return_gains:
            return {"kappa": kappa, "lip_g": lip, "window": inside}
        bias = nn.Dense(d, kernel_init=zeros, name="bias")(e)
        w = inside.astype(x.dtype)[:, None]
        vp = v_pre.reshape(shape[0], -1)
        r = -w * (self.beta * vp + kappa[:, None] * xf) + lip[:, None] * h + bias
        return r.reshape(shape)


def _unit_lipschitz(mod, xf, e, features, scale, norm):
    """``h(x, e)``, (B, D) -> (B, D), with ``||J_x h|| <= 1``: dense layers divided
    by a spectral-norm bound, tanh, the embedding ``e`` added before each tanh.
    Initialised to identity (padded) weights with input / ``scale`` and output *
    ``scale`` (Lipschitz-neutral), so ``h(x) ~ x`` for ``|x| << scale``. Called
    inside ``mod``'s compact ``__call__`` (parameters ``w0, w1, ...``)."""
    h = xf / scale
    dims = list(features) + [xf.shape[1]]
    eye_init = lambda k, shape, dtype: jnp.eye(shape[0], shape[1], dtype=dtype)
    for i, f in enumerate(dims):
        w = mod.param(f"w{i}", eye_init, (h.shape[1], f), xf.dtype)
        w = w / jnp.maximum(_spectral_bound(w, norm), 1e-12)
        h = h @ w
        if i < len(dims) - 1:
            h = jnp.tanh(h + nn.Dense(f, kernel_init=nn.initializers.zeros)(e))
    return scale * h


def residual_linear_matrix(params) -> jax.Array:
    """The linear part ``A = -L L^T + (K - K^T)`` (D, D) of a
    ``ContractingResidual(linear=True)`` from its params (``sym(A) <= 0``)."""
    if "lin_L" not in params or "lin_K" not in params:
        raise ValueError("params have no linear part: build ContractingResidual(linear=True)")
    lo, k = params["lin_L"], params["lin_K"]
    return -lo @ lo.T + (k - k.T)


def lmi_certificate(a: jax.Array, rate: float, metric: jax.Array | None = None) -> jax.Array:
    """``lambda_max(A^T P + P A + 2 rate P)`` for ``A`` (D, D) and metric ``P``
    (D, D) symmetric positive definite (identity by default).

    ``<= 0`` certifies the LMI of contraction theory: ``x' = A x`` contracts at
    rate ``rate`` in the norm ``sqrt(x^T P x)`` (Lohmiller & Slotine 1998).
    """
    check_positive("rate", rate, allow_zero=True)
    a = jnp.asarray(a)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"A must be a square (D, D) matrix, got shape {a.shape}")
    p = jnp.eye(a.shape[0], dtype=a.dtype) if metric is None else jnp.asarray(metric, a.dtype)
    if p.shape != a.shape:
        raise ValueError(f"metric must have the shape of A {a.shape}, got {p.shape}")
    if not bool(jnp.allclose(p, p.T)) or not float(jnp.linalg.eigvalsh(p)[0]) > 0:
        raise ValueError("metric must be symmetric positive definite")
    m = a.T @ p + p @ a + 2 * rate * p
    return jnp.linalg.eigvalsh(0.5 * (m + m.T))[-1]


class Classifier(nn.Module):
    """MLP classifier for flat 8x8 digits; returns ``(logits, features)``.

    Used once-trained as the feature extractor of the FID-like digits metric.
    """

    features: Sequence[int] = (128, 64)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        h = x.reshape(x.shape[0], -1)
        for f in self.features:
            h = nn.relu(nn.Dense(f)(h))
        return nn.Dense(self.num_classes)(h), h
