"""Closed forms for the sampler error ``delta(x, k, T)`` at one test point.

Every function takes the per-point quantities ``delta_T = m - mu_T``,
``delta_R = m - mu_R`` and the predictive variance ``s2`` (scalars; ``jax.vmap``
over points / parameters), plus ``ks`` (1-D integers, concrete) where a curve in
``k`` is returned. Translation invariance makes ``m`` itself irrelevant.

Exact softmax error (spec "Error of the sampler"): with ``z = (y-m)/s``,
``V = (y-mu_R)^2/T`` and a standard Gumbel ``G``, the Gumbel-max identity gives
``E[sum_i p_i e_i] = k int dt h(t) S_Y(t)^{k-1}``, ``h(t) = E[e p_G(V - t)]``,
``S_Y(t) = E[exp(-e^{t-V})] = P(V - G > t)``. Substituting ``u = e^t`` this is
exactly the spec's ``k int_0^inf du E[e w e^{-uw}] (E[e^{-uw}])^{k-1}``; the
``t``-form is what stays stable at low ``T``: the inner expectation is taken on
a window ``V - t in [-5, 40]`` (outside it the Gumbel kernels are < 1e-17),
with ``sqrt(V)`` as variable (removes the ``V^{-1/2}`` singularity), and
``t`` runs on a sinh grid that resolves ``O(1)`` features near 0 and relative
features at large ``t``. Low-T switch: :func:`softmax_error_exact` detects
``T/s^2 < 1e-14`` (``T = 0`` included) and returns the best-of-k integral (the
two agree to O(k^2 T/s^2)); inside traced/vmapped code ``T/s^2`` is clamped at
1e-14 instead, which is the same switch up to that error. High-T switch: where
``x = 2 (s^2 + Delta_R^2 + |Delta_R Delta_T|) / T < eps^(1/3)`` of the dtype the
third-order high-temperature expansion (exact through ``O(x^2)``, remainder
below round-off) replaces the quadrature, which loses the ``O(s^2/T)``
structure in round-off there (float32 gave 0.185 instead of 1.01 at T = 1e10).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from gapjax._checks import (check_finite, check_int, check_ks, check_positive,
                            check_temps, concrete)

_G_LO, _G_HI = -5.0, 40.0      # Gumbel-kernel window in V - t
_T_LO = -40.0                   # h(t) <= E[e] e^t below this
_TAU_FALLBACK = 1e-14
_NODE_CHUNK_ELEMS = 2**22       # softmax_error_averaged: nodes x num_t x num_rho per chunk


@functools.lru_cache(maxsize=16)
def _legendre01(n):
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1), 0.5 * w


def _phi(z):
    return jnp.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)


def _check_point(delta_T, delta_R, s2):
    check_finite("delta_T", delta_T)
    check_finite("delta_R", delta_R)
    check_positive("s2", s2)
    shapes = {n: np.shape(v) for n, v in
              (("delta_T", delta_T), ("delta_R", delta_R), ("s2", s2))}
    if any(s != () for s in shapes.values()):
        raise ValueError(f"per-point closed forms take scalars (vmap over points), "
                         f"got shapes {shapes}")


# --------------------------------------------------------------------------- softmax

def softmax_error_exact(delta_T, delta_R, s2, T, ks, *, num_t: int = 2048,
                        num_rho: int = 128, z_max: float = 12.0):
    """Exact softmax-sampler error ``delta(x, k, T)`` by 2-D quadrature.

    Arguments:
      delta_T, delta_R, s2: scalars (``m - mu_T``, ``m - mu_R``, predictive var).
      T: scalar temperature >= 0 (``T = 0`` is best-of-k).
      ks: 1-D integers >= 1.
      num_t, num_rho: quadrature sizes (t-grid trapezoid, Gauss-Legendre in
        ``sqrt(V)``); z_max: Gaussian truncation in predictive std units.
    Returns:
      ``[len(ks)]`` values of ``E[sum_i p_i (y_i - mu_T)^2]``.
    """
    _check_point(delta_T, delta_R, s2)
    check_temps(T)
    check_int("num_t", num_t, min=2)
    check_int("num_rho", num_rho, min=1)
    check_positive("z_max", z_max)
    if np.shape(T) != ():
        raise ValueError(f"T must be a scalar (vmap over temperatures), got {np.shape(T)}")
    kf = check_ks(ks).astype(np.float64)
    Tv, s2v = concrete(T), concrete(s2)
    if Tv is not None and s2v is not None and float(Tv) < _TAU_FALLBACK * float(s2v):
        return _best_of_k(delta_T, delta_R, s2, jnp.asarray(kf), 24)
    return _softmax_exact(delta_T, delta_R, s2, T, tuple(kf), int(num_t), int(num_rho),
                          float(z_max))


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _softmax_exact(delta_T, delta_R, s2, T, ks, num_t, num_rho, z_max):
    dtype = jnp.result_type(delta_T, delta_R, s2, T, float)
    delta_T, delta_R, s2, T = (jnp.asarray(v, dtype) for v in (delta_T, delta_R, s2, T))
    ks = jnp.asarray(ks, dtype)
    s = jnp.sqrt(s2)
    tau_s = jnp.maximum(T / s2, _TAU_FALLBACK)
    zR, b = -delta_R / s, -delta_T / s
    sq = jnp.sqrt(tau_s)
    rho_cap = (z_max + jnp.abs(zR)) / sq
    v_max = rho_cap**2

    # t grid: t = A sinh(xi), trapezoid in xi.
    A = 10.0
    t_hi = v_max + 5.0
    xi = jnp.linspace(jnp.arcsinh(_T_LO / A), jnp.arcsinh(t_hi / A), num_t, dtype=dtype)
    t = A * jnp.sinh(xi)
    dxi = xi[1] - xi[0]
    wt = A * jnp.cosh(xi) * dxi * jnp.ones_like(xi).at[0].set(0.5).at[-1].set(0.5)

    u, wu = (jnp.asarray(v, dtype) for v in _legendre01(num_rho))

    def inner(ti):
        # window g = V - t in [g_lo, g_hi], V = rho^2, capped at rho_cap.
        g_lo = jnp.maximum(-ti, _G_LO)
        g_hi = jnp.clip(v_max - ti, g_lo, _G_HI)
        v_lo, v_hi = ti + g_lo, ti + g_hi
        r_lo, r_hi = jnp.sqrt(jnp.maximum(v_lo, 0.0)), jnp.sqrt(jnp.maximum(v_hi, 0.0))
        # rho - sqrt(t) without cancellation when t > 0 (large t).
        pos = ti > 0
        st = jnp.sqrt(jnp.where(pos, ti, 1.0))
        width = (g_hi - g_lo) / jnp.where(r_hi + r_lo > 0, r_hi + r_lo, 1.0)
        width = jnp.where(r_hi + r_lo > 0, width, 0.0)
        lo_off = g_lo / (r_lo + st)                       # r_lo - sqrt(t)
        rho = r_lo + width * u
        g = jnp.where(pos, (lo_off + width * u) * (rho + st), rho**2 - ti)
        r = sq * rho
        zp, zm = zR + r, zR - r
        dens = (_phi(zp), _phi(zm))
        e = s2 * (zp - b) ** 2, s2 * (zm - b) ** 2
        wq = wu * width * sq
        kern_h = jnp.exp(-g - jnp.exp(-g))                # Gumbel pdf
        kern_s = jnp.exp(-jnp.exp(-g))                    # Gumbel cdf
        h = jnp.sum(wq * kern_h * (dens[0] * e[0] + dens[1] * e[1]))
        r_top = sq * jnp.sqrt(jnp.maximum(v_hi, 0.0))
        tail = ndtr(zR - r_top) + ndtr(-zR - r_top)      # P(V > t + g_hi)
        sy = jnp.sum(wq * kern_s * (dens[0] + dens[1])) + tail
        return h, jnp.clip(sy, 0.0, 1.0)

    h, sy = jax.vmap(inner)(t)
    logs = jnp.log(sy)
    km1 = (ks - 1)[:, None]
    pw = jnp.where(km1 == 0, 1.0, jnp.exp(km1 * jnp.where(sy > 0, logs, -jnp.inf)[None, :]))
    quad = ks * jnp.sum((wt * h)[None, :] * pw, axis=-1)
    # Large T: the quadrature drowns the O(s^2/T) structure in round-off (float32
    # beyond T/s^2 ~ 1e8: 0.185 for a limit of 1.01; float64 beyond ~1e25). There
    # the high-temperature expansion is exact through O(x^2), x = (y - mu_R)^2/T
    # over the bulk, and its O(x^3) remainder is below round-off once x < eps^(1/3).
    x = 2 * (s2 + delta_R**2 + jnp.abs(delta_R * delta_T)) / T
    aT = jnp.where(jnp.isfinite(T), 2 * s2 / T, 0.0)
    c = delta_R * (2 * delta_T + delta_R) + s2
    u1 = 1 - 1 / ks
    u2 = u1 * (1 - 2 / ks)
    u3 = u2 * (1 - 3 / ks)
    expn = (delta_T**2 + s2 - aT * (2 * delta_R * delta_T + s2) * u1
            + aT**2 * c * u2 - aT**3 * (c + delta_R**2) * u3)
    return jnp.where(x < jnp.finfo(dtype).eps ** (1 / 3), expn, quad)


# --------------------------------------------------------------------------- best-of-k

def best_of_k_exact(delta_T, delta_R, s2, ks, *, num_nodes: int = 24):
    """Exact best-of-k (``T = 0``) error at one test point.

    Spec: ``delta = s^2 int k phi(w) [1 - Phi(c'+r) + Phi(c'-r)]^{k-1} (w-b)^2 dw``
    with ``r = |w - c'|``, folded onto ``r >= 0`` and integrated by composite
    Gauss-Legendre on segments geometric in the order-statistic scale
    ``1/((k-1) F'(0))`` (resolves ``k`` up to ~1e6), with breaks at ``|c'|``.

    Returns ``[len(ks)]``.
    """
    _check_point(delta_T, delta_R, s2)
    kf = check_ks(ks).astype(np.float64)
    return _best_of_k(delta_T, delta_R, s2, jnp.asarray(kf), int(num_nodes))


@functools.partial(jax.jit, static_argnums=(4,))
def _best_of_k(delta_T, delta_R, s2, ks, num_nodes):
    """Spec's best-of-k integral over ``r = |w - c'|`` by composite Gauss-Legendre.

    ``delta = s^2 int_0^inf [phi(c'+r) (c'+r-b)^2 + phi(c'-r) (c'-r-b)^2]
    k (1 - F(r))^{k-1} dr`` with ``F(r) = P(|z - c'| < r)``. Segments: geometric
    in ``r0 = 1/((k-1) F'(0))`` (the scale of the order statistic, 4x apart),
    plus breakpoints at ``|c'|`` and ``|c'| +- 1``, up to ``|c'| + 12``;
    ``num_nodes`` Gauss-Legendre nodes per segment.
    """
    dtype = jnp.result_type(delta_T, delta_R, s2, float)
    delta_T, delta_R, s2 = (jnp.asarray(v, dtype) for v in (delta_T, delta_R, s2))
    ks = jnp.asarray(ks, dtype)
    s = jnp.sqrt(s2)
    c, b = -delta_R / s, -delta_T / s           # c' = (mu_R - m)/s, b = (mu_T - m)/s
    ac = jnp.abs(c)
    r_max = ac + 12.0
    f0 = 2 * _phi(ac)                           # F'(0)
    r0 = 1.0 / jnp.maximum((ks - 1) * f0, 1e-300)                   # [nk]
    geo = r0[:, None] * 4.0 ** jnp.arange(-2, 14, dtype=dtype)[None, :]
    fixed = jnp.stack([jnp.zeros_like(ac), jnp.maximum(ac - 1, 0), ac, ac + 1, r_max])
    br = jnp.concatenate([geo, jnp.broadcast_to(fixed, (ks.shape[0], 5))], axis=1)
    br = jnp.sort(jnp.clip(br, 0.0, r_max), axis=1)                 # [nk, S+1]
    lo, hi = br[:, :-1], br[:, 1:]
    u, wu = (jnp.asarray(v, dtype) for v in _legendre01(num_nodes))
    r = lo[..., None] + (hi - lo)[..., None] * u[None, None, :]     # [nk, S, N]
    wr = (hi - lo)[..., None] * wu[None, None, :]
    inside = ndtr(r - ac) - ndtr(-r - ac)
    outside = ndtr(ac - r) + ndtr(-ac - r)
    log_s = jnp.where(inside < 0.5, jnp.log1p(-inside), jnp.log(outside))
    km1 = (ks - 1)[:, None, None]
    surv = jnp.where(km1 == 0, 1.0, jnp.exp(km1 * log_s))
    zp, zm = c + r, c - r
    g = _phi(zp) * (zp - b) ** 2 + _phi(zm) * (zm - b) ** 2
    return s2 * ks * jnp.sum(wr * g * surv, axis=(1, 2))


# --------------------------------------------------------------------------- expansions

def expansion_coefficients(delta_T, delta_R, s2, T):
    """High-temperature coefficients ``(A0, B0, C0, D0)``, ``a_T = 2 s^2/T``.

    ``A0 = Delta_T^2 + s^2``, ``B0 = -a_T (2 Delta_R Delta_T + s^2)``,
    ``C0 = a_T^2 (Delta_R (2 Delta_T + Delta_R) + s^2)``,
    ``D0 = -a_T^3 (Delta_R (2 Delta_T + 2 Delta_R) + s^2)``. Broadcasts.
    """
    check_positive("T", T)
    check_positive("s2", s2)
    aT = 2 * s2 / T
    A0 = delta_T**2 + s2
    B0 = -aT * (2 * delta_R * delta_T + s2)
    C0 = aT**2 * (delta_R * (2 * delta_T + delta_R) + s2)
    D0 = -aT**3 * (delta_R * (2 * delta_T + 2 * delta_R) + s2)
    return A0, B0, C0, D0


def expansion_in_k(coefs, ks):
    """``A0 + B0 (1-1/k) + C0 (1-1/k)(1-2/k) + D0 (1-1/k)(1-2/k)(1-3/k)``.

    ``coefs``: tuple of four scalars (per point, or averaged over points — the
    expansion is linear in them). Returns ``[len(ks)]``.
    """
    k = jnp.asarray(check_ks(ks), jnp.result_type(float))
    A0, B0, C0, D0 = coefs
    u1 = 1 - 1 / k
    u2 = u1 * (1 - 2 / k)
    u3 = u2 * (1 - 3 / k)
    return A0 + B0 * u1 + C0 * u2 + D0 * u3


def high_temperature_expansion(delta_T, delta_R, s2, T, ks):
    """Third-order high-temperature expansion of ``delta(x, k, T)``; ``[len(ks)]``."""
    return expansion_in_k(expansion_coefficients(delta_T, delta_R, s2, T), ks)


def optimal_temperature_formula(C1, C2, k, s2):
    """Leading-order optimal temperature (k > 2, high-T regime).

    ``t* = 2 (1 - 2/k) C2 / C1``, ``T* = 2 s2 t*`` with ``C1 = s^2 + 2 Delta_R
    Delta_T``, ``C2 = C1 + Delta_R^2`` (pass per-point values or their averages
    over test points with ``s2 = E[s^2]``). Returns ``T*``; NaN where ``C1 <= 0``
    (no interior optimum at this order).
    """
    kk = np.asarray(k, dtype=float)
    if np.any(kk <= 2):
        raise ValueError(f"optimal_temperature_formula needs k > 2, got {k}")
    check_positive("s2", s2)
    t = 2 * (1 - 2 / kk) * C2 / C1
    return jnp.where(jnp.asarray(C1) > 0, 2 * s2 * t, jnp.nan)


def temperature_coefficients(delta_T, delta_R, s2):
    """``(C1, C2) = (s^2 + 2 Delta_R Delta_T, C1 + Delta_R^2)``."""
    C1 = s2 + 2 * delta_R * delta_T
    return C1, C1 + delta_R**2


def minimize_log_scalar(f, lo, hi, *, iters: int = 60, python_loop: bool = False):
    """Golden-section minimum of a unimodal ``f`` over ``log x`` in ``[lo, hi]``.

    ``f``: JAX scalar function of ``x``. Returns ``(x*, f(x*))``. Used for the
    exact optimal temperature (numerical argmin of the exact ``delta(T)``).
    ``python_loop=True`` drives an already-jitted ``f`` from Python (no new
    compilation); the default ``lax.fori_loop`` keeps the search jit-able.
    """
    check_int("iters", iters, min=1)
    check_positive("lo", lo)
    check_positive("hi", hi)
    if not float(lo) < float(hi):
        raise ValueError(f"need lo < hi, got {lo}, {hi}")
    gr = (math.sqrt(5) - 1) / 2
    a, b = math.log(lo), math.log(hi)
    if python_loop:
        c, d = b - gr * (b - a), a + gr * (b - a)
        fc, fd = float(f(math.exp(c))), float(f(math.exp(d)))
        for _ in range(iters):
            if fc < fd:
                b, d, fd = d, c, fc
                c = b - gr * (b - a)
                fc = float(f(math.exp(c)))
            else:
                a, c, fc = c, d, fd
                d = a + gr * (b - a)
                fd = float(f(math.exp(d)))
        xm = math.exp(0.5 * (a + b))
        return xm, float(f(xm))

    def body(_, st):
        a, b, c, d, fc, fd = st
        left = fc < fd
        na = jnp.where(left, a, c)
        nb = jnp.where(left, d, b)
        nc = jnp.where(left, nb - gr * (nb - na), d)
        nd = jnp.where(left, c, na + gr * (nb - na))
        fnew = f(jnp.exp(jnp.where(left, nc, nd)))
        nfc = jnp.where(left, fnew, fd)
        nfd = jnp.where(left, fc, fnew)
        return na, nb, nc, nd, nfc, nfd

    c = b - gr * (b - a)
    d = a + gr * (b - a)
    st = (jnp.asarray(a), jnp.asarray(b), jnp.asarray(c), jnp.asarray(d),
          f(jnp.exp(c)), f(jnp.exp(d)))
    a, b, c, d, fc, fd = jax.lax.fori_loop(0, iters, body, st)
    xm = jnp.exp(0.5 * (a + b))
    return xm, f(xm)


# --------------------------------------------------------------------------- limits

def extreme_value_pointwise(delta_T, s2, k):
    """EVT law (``T -> 0``, then ``k -> inf``, ``mu_R = mu_T``):
    ``delta ~ pi s^2 exp(Delta_T^2/s^2) / k^2``."""
    check_positive("s2", s2)
    check_positive("k", k)
    return math.pi * s2 * jnp.exp(delta_T**2 / s2) / jnp.asarray(k, jnp.result_type(float)) ** 2


def extreme_value_averaged(sigma, mean_delta_sq, k):
    """EVT law averaged over Gaussian ``Delta_T`` with ``s^2 ~ sigma^2``:
    ``pi sigma^2 / (k^2 sqrt(1 - 2 E[Delta_T^2]/sigma^2))``; NaN (divergent)
    when ``2 E[Delta_T^2] >= sigma^2``."""
    check_positive("sigma", sigma)
    check_positive("mean_delta_sq", mean_delta_sq, allow_zero=True)
    check_positive("k", k)
    q = 1 - 2 * jnp.asarray(mean_delta_sq) / sigma**2
    k = jnp.asarray(k, jnp.result_type(float))
    return jnp.where(q > 0, math.pi * sigma**2 / (k**2 * jnp.sqrt(jnp.where(q > 0, q, 1.0))),
                     jnp.nan)


def large_k_limit(delta_T, delta_R, s2, T):
    """``k -> inf`` at fixed ``T > 0``: ``(mu~ - mu_T)^2 + v``.

    ``v = s^2 T/(T + 2 s^2)``, ``mu~ = v (m/s^2 + 2 mu_R/T)``, i.e.
    ``mu~ - mu_T = Delta_T - 2 v Delta_R / T``.
    """
    check_positive("T", T)
    check_positive("s2", s2)
    v = s2 * T / (T + 2 * s2)
    return (delta_T - 2 * v * delta_R / T) ** 2 + v


def optimal_k(values, ks):
    """Optimal number of samples from a curve ``values [len(ks)]``.

    Returns ``(k*, value*, interior)``: ``interior`` is False when the minimum
    is at the largest ``k`` (curve still decreasing: no finite optimum seen).
    """
    kk = check_ks(ks)
    v = concrete(values)
    if v is None:
        raise TypeError("optimal_k needs concrete values")
    if v.shape != kk.shape:
        raise ValueError(f"values must have shape {kk.shape} (one per k), got {v.shape}")
    i = int(np.nanargmin(v))
    return int(kk[i]), float(v[i]), bool(i < len(kk) - 1)


# --------------------------------------------------------------------------- averages

def _check_nodes(nodes):
    if not (isinstance(nodes, (tuple, list)) and len(nodes) == 4):
        raise TypeError("nodes must be the tuple (delta_T, delta_R, s2, weights) "
                        "returned by de_nodes / posterior_nodes")
    shapes = [np.shape(v) for v in nodes]
    if len(set(shapes)) != 1 or len(shapes[0]) not in (1, 2):
        raise ValueError(f"nodes must be four arrays of one shape [N] (or [C, N] for a "
                         f"batch of laws), got {shapes}")
    check_positive("nodes s2", nodes[2])
    return tuple(jnp.asarray(v) for v in nodes)


def softmax_error_averaged(nodes, temps, ks, *, num_t: int = 2048, num_rho: int = 128,
                           z_max: float = 12.0, node_chunk: int | None = None):
    """Exact softmax error averaged over a test-point law given by quadrature nodes.

    Arguments:
      nodes: ``(delta_T, delta_R, s2, weights)`` from :func:`de_nodes` or
        :func:`posterior_nodes`.
      temps: ``[nT]`` temperatures >= 0; ks: 1-D integers.
      node_chunk: nodes evaluated at once (``lax.map`` over chunks), so memory is
        ``O(node_chunk num_t num_rho)`` whatever the rule's size; by default as
        many as keep ``node_chunk num_t num_rho <= 2^22`` (32 MB per float64
        temporary; 16 nodes at the default grid).
    Returns ``[nT, len(ks)]`` = ``sum_j weights_j delta(node_j, k, T)``.
    """
    dT, dR, s2, w = _check_nodes(nodes)
    if dT.ndim != 1:
        raise ValueError(f"softmax_error_averaged takes 1-D nodes [N], got {dT.shape}")
    temps = jnp.atleast_1d(jnp.asarray(check_temps(temps)))
    kf = tuple(check_ks(ks).astype(np.float64))
    if node_chunk is None:
        node_chunk = max(1, _NODE_CHUNK_ELEMS // (int(num_t) * int(num_rho)))
    node_chunk = min(check_int("node_chunk", node_chunk, min=1), dT.shape[0])
    return _softmax_avg(dT, dR, s2, w, temps.astype(dT.dtype), kf, int(num_t),
                        int(num_rho), float(z_max), node_chunk)


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8, 9))
def _softmax_avg(dT, dR, s2, w, temps, ks, num_t, num_rho, z_max, node_chunk):
    def one_T(T):
        vals = jax.lax.map(lambda n: _softmax_exact(*n, T, ks, num_t, num_rho, z_max),
                           (dT, dR, s2), batch_size=node_chunk)
        return w @ vals
    return jax.lax.map(one_T, temps)


def best_of_k_averaged(nodes, ks, *, num_nodes: int = 24):
    """Exact best-of-k error averaged over quadrature nodes.

    ``nodes`` as from :func:`de_nodes` (``[N]`` each) or stacked ``[C, N]`` for
    ``C`` test-point laws at once. Returns ``[len(ks)]`` (or ``[C, len(ks)]``).
    """
    dT, dR, s2, w = _check_nodes(nodes)
    kf = jnp.asarray(check_ks(ks).astype(np.float64))
    if dT.ndim == 2:
        return _bok_avg_batched(dT, dR, s2, w, kf, int(num_nodes))
    return _bok_avg(dT, dR, s2, w, kf, int(num_nodes))


@functools.partial(jax.jit, static_argnums=(5,))
def _bok_avg_batched(dT, dR, s2, w, ks, num_nodes):
    return jax.vmap(lambda a, b, c, v: _bok_avg(a, b, c, v, ks, num_nodes))(dT, dR, s2, w)


@functools.partial(jax.jit, static_argnums=(5,))
def _bok_avg(dT, dR, s2, w, ks, num_nodes):
    vals = jax.vmap(lambda a, b, c: _best_of_k(a, b, c, ks, num_nodes))(dT, dR, s2)
    return w @ vals
