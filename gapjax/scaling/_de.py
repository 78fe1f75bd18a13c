"""Deterministic equivalents (high-dimensional limit) of the BLR predictive.

Ratio convention: every function here takes ``a = d / n`` (as the official code).

* :func:`renormalized_ridge`: ``R`` solving ``R (1 - a S^2/(S^2+R)) = Rhat``,
  ``Rhat = a sigma^2/gamma^2`` (spec "Deterministic equivalents").
* :func:`de_predictive`: the paper's pointwise DE ``m_DE = S^2/(S^2+R) mu_T``,
  ``s^2_DE = sigma^2 + gamma^2 R ||x||^2/(R+S^2)``. Valid when ``a -> 0``
  (``n >> d``, the paper's experiments); in the proportional regime
  (``a = O(1)``) ``m_DE`` omits an O(1) fluctuation of ``m``.
* :func:`de_error_paper`: ``E_x[(m_DE - mu_T)^2] = (R/(R+S^2))^2 S^2 ||w_T||^2/d``.
* :func:`de_error_ridge`: the ridge-regression DE
  ``E[(m - mu_T)^2] = (B + sigma^2 g2)/(1 - g2)``, ``g2 = a S^4/(S^2+R)^2``,
  valid in the proportional regime as well (keeps the variance term and the
  ``1/(1-g2)`` inflation).
* :func:`de_nodes`: quadrature nodes/weights over the test-point law of
  ``(Delta_T, Delta_R, s^2)`` under either DE, so any per-point closed form
  averages as ``sum(weights * f(nodes))``.
* :func:`posterior_nodes`: the same for a fitted posterior at finite ``d``.
  Choice: its default rule over the Gaussian test-point variable is an
  equispaced trapezoid (not Gauss-Hermite), because at low ``T`` with a
  misspecified judge the per-point softmax error has a sharp O(1) feature in
  ``Delta_T`` that Gauss-Hermite resolves only slowly (0.9% error at 24 nodes;
  see its docstring). :func:`de_nodes` keeps Gauss-Hermite (used at high T / c = 0).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from gapjax._checks import check_finite, check_positive

_TRAP_Z_MAX = 8.5        # trapezoid window for the Gaussian test-point variable


def _check_common(a, S, sigma, gamma):
    check_positive("a (= d/n)", a)
    check_positive("S", S)
    check_positive("sigma", sigma)
    check_positive("gamma", gamma)


def renormalized_ridge(a, S, sigma, gamma):
    """Renormalised ridge ``R`` (closed form, cancellation-free root).

    Arguments: ``a = d/n``, input scale ``S``, noise std ``sigma``, prior std
    ``gamma`` (scalars or broadcastable arrays).
    Returns ``R = 0.5 [S^2(a-1) + Rhat + sqrt((S^2(a-1)+Rhat)^2 + 4 Rhat S^2)]``.
    """
    _check_common(a, S, sigma, gamma)
    rhat = a * sigma**2 / gamma**2
    b = S**2 * (a - 1) + rhat
    root = jnp.sqrt(b**2 + 4 * rhat * S**2)
    # R^2 - b R - Rhat S^2 = 0; for b < 0 use the product of roots (no cancellation).
    safe = jnp.where(b >= 0, 1.0, root - b)
    return jnp.where(b >= 0, 0.5 * (b + root), 2 * rhat * S**2 / safe)


def de_predictive(mu_T, xnorm2, R, S, sigma, gamma):
    """Paper's DE of the predictive at a test point.

    Arguments: ``mu_T = w_T . x`` and ``xnorm2 = ||x||^2`` (same shape), ``R`` from
    :func:`renormalized_ridge`, ``S, sigma, gamma``.
    Returns ``(m_DE, s2_DE)``.
    """
    check_positive("xnorm2", xnorm2, allow_zero=True)
    shrink = S**2 / (S**2 + R)
    return shrink * mu_T, sigma**2 + gamma**2 * R * xnorm2 / (R + S**2)


def de_mean_variance(R, S, sigma, gamma):
    """``E_x[s^2_DE] = sigma^2 + gamma^2 R S^2/(R+S^2)`` (``E||x||^2 = S^2``)."""
    check_positive("R", R, allow_zero=True)
    check_positive("S", S)
    check_positive("sigma", sigma)
    check_positive("gamma", gamma)
    return sigma**2 + gamma**2 * R * S**2 / (R + S**2)


def de_error_paper(R, S, w_norm2, d):
    """Paper's DE of ``E_x[(m - mu_T)^2] = (R/(R+S^2))^2 S^2 ||w_T||^2 / d``.

    Regime: ``a = d/n -> 0``; misses the variance ``sigma^2 g2/(1-g2)`` and the
    bias inflation, both O(1) when ``a = O(1)``.
    """
    check_positive("d", d)
    check_positive("R", R, allow_zero=True)
    check_positive("S", S)
    check_positive("w_norm2", w_norm2, allow_zero=True)
    return (R / (R + S**2)) ** 2 * S**2 * w_norm2 / d


def de_error_ridge(a, R, S, sigma, w_norm2, d):
    """Ridge DE of ``E[(m - mu_T)^2] = (B + sigma^2 g2)/(1 - g2)``.

    ``g2 = a S^4/(S^2+R)^2``, ``B`` = :func:`de_error_paper`. Regime: any fixed
    ``a`` as ``d, n -> inf`` (proportional), which includes ``a -> 0``.
    """
    check_positive("a", a)
    check_positive("d", d)
    check_positive("sigma", sigma)
    g2 = a * S**4 / (S**2 + R) ** 2
    return (de_error_paper(R, S, w_norm2, d) + sigma**2 * g2) / (1 - g2)


@functools.lru_cache(maxsize=32)
def _gh(n):
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / np.sqrt(2 * np.pi)


@functools.lru_cache(maxsize=32)
def _trap_normal(n, z_max=_TRAP_Z_MAX):
    """Equispaced trapezoid nodes for ``E f(g)``, ``g ~ N(0, 1)``, on ``[-z_max, z_max]``.

    Weights ``phi(x) h`` normalised to sum 1. For integrands analytic in a strip
    the error decays like ``exp(-2 pi w / h)`` (``w`` the strip half-width), and
    equal spacing resolves sharp features anywhere in the bulk; truncation costs
    ``~phi(z_max)`` (1.7e-16 at 8.5).
    """
    if int(n) != n or n < 3:
        raise ValueError(f"num must be an integer >= 3 for the trapezoid rule, got {n}")
    x = np.linspace(-z_max, z_max, int(n))
    w = np.exp(-0.5 * x**2)
    return x, w / w.sum()


@functools.lru_cache(maxsize=32)
def _chi2_nodes(n, dof):
    """Nodes/weights for E[f(chi^2_dof)] (generalised Gauss-Laguerre)."""
    from scipy.special import roots_genlaguerre
    x, w = roots_genlaguerre(n, dof / 2 - 1)
    return 2 * x, w / w.sum()


def de_nodes(c, a, S, sigma, gamma, w_norm2, d, *, kind: str = "paper",
             num_mu: int = 48, num_chi: int = 6, num_fluct: int = 12):
    """Quadrature over the test-point law of ``(Delta_T, Delta_R, s^2)`` under a DE.

    ``x = (S/sqrt d) g``: ``mu_T ~ N(0, S^2 ||w_T||^2/d)`` (Gauss-Hermite) and
    ``||x||^2 = mu_T^2/||w_T||^2 + (S^2/d) chi^2_{d-1}`` (generalised
    Gauss-Laguerre). ``kind="paper"``: ``Delta_T = -R/(R+S^2) mu_T``.
    ``kind="ridge"``: adds an independent Gaussian fluctuation to ``Delta_T``
    whose variance makes ``E[Delta_T^2]`` equal :func:`de_error_ridge` (our
    choice for carrying the proportional-regime fluctuation into per-point
    sampler formulas). ``Delta_R = (1+c) Delta_T`` throughout.

    Returns ``(delta_T, delta_R, s2, weights)``, 1-D NumPy float64 arrays;
    ``sum(weights * f(delta_T, delta_R, s2))`` approximates ``E_x f``.
    """
    check_finite("c", c)
    _check_common(a, S, sigma, gamma)
    check_positive("w_norm2", w_norm2)
    if kind not in ("paper", "ridge"):
        raise ValueError(f"kind must be 'paper' or 'ridge', got {kind!r}")
    if int(d) != d or d < 1:
        raise ValueError(f"d must be a positive integer, got {d}")
    R = float(renormalized_ridge(a, S, sigma, gamma))
    xm, wm = _gh(num_mu)
    mu = np.sqrt(S**2 * w_norm2 / d) * xm
    if d > 1:
        xc, wc = _chi2_nodes(num_chi, d - 1)
    else:
        xc, wc = np.zeros(1), np.ones(1)
    if kind == "ridge":
        extra = float(de_error_ridge(a, R, S, sigma, w_norm2, d)
                      - de_error_paper(R, S, w_norm2, d))
        xf, wf = _gh(num_fluct)
        fl = np.sqrt(max(extra, 0.0)) * xf
    else:
        fl, wf = np.zeros(1), np.ones(1)
    MU, CH, FL = np.meshgrid(mu, xc, fl, indexing="ij")
    W = np.einsum("i,j,k->ijk", wm, wc, wf)
    xnorm2 = MU**2 / w_norm2 + S**2 / d * CH
    dT = -R / (R + S**2) * MU + FL
    s2 = sigma**2 + gamma**2 * R * xnorm2 / (R + S**2)
    return dT.ravel(), (1 + c) * dT.ravel(), s2.ravel(), W.ravel()


def posterior_nodes(post, w_T, c, S: float = 1.0, *, num: int = 137,
                    rule: str = "trapezoid"):
    """Quadrature over test points ``x ~ N(0, S^2 I/d)`` for a *fitted* posterior.

    Finite-``d`` counterpart of :func:`de_nodes`: ``Delta_T = x . (wbar - w_T)``
    is exactly ``N(0, S^2 ||wbar - w_T||^2 / d)``, and ``s^2``
    is replaced by its conditional mean given ``Delta_T``,
    ``sigma^2 + alpha^2 u^T C u + (S^2/d)(tr C - u^T C u)`` with
    ``u = (wbar - w_T)/||wbar - w_T||``, ``alpha = x . u``, ``C = Lambda^{-1}``.
    Dropping the conditional spread of ``s^2`` changes per-point formulas by
    ``O(Var(s^2)/s^4)`` (~1e-7 at the paper's scale).

    ``rule="trapezoid"`` (default): ``num`` equispaced nodes on ``[-8.5, 8.5]``
    standard deviations of ``Delta_T`` (137 -> step 0.125). At low ``T`` and
    large ``|c|`` the per-point softmax error rises by O(1) over ~0.3 std of
    ``Delta_T`` (k = 50, c = 15, T/(2 sigma^2) = 0.5: 0.34 -> 3.8 sigma^2); the
    trapezoid rule converges geometrically there (rel. error 3e-10 at 137
    nodes) while Gauss-Hermite converges slowly and erratically (24 nodes:
    +0.9%, 48: -0.15%, 128: +2.6e-5). ``rule="hermite"``: ``num`` Gauss-Hermite
    nodes, exact for polynomial integrands and efficient for smooth ones
    (high ``T`` or ``c = 0``).

    Returns ``(delta_T, delta_R, s2, weights)`` as NumPy float64 arrays.
    """
    check_finite("c", c)
    check_positive("S", S)
    if rule not in ("trapezoid", "hermite"):
        raise ValueError(f"rule must be 'trapezoid' or 'hermite', got {rule!r}")
    if int(num) != num or num < (3 if rule == "trapezoid" else 1):
        raise ValueError(f"num must be a positive integer (>= 3 for the trapezoid rule), "
                         f"got {num}")
    mean = np.asarray(post.mean, np.float64)
    cov = np.asarray(post.cov, np.float64)
    w_T = np.asarray(w_T, np.float64)
    if w_T.shape != mean.shape:
        raise ValueError(f"w_T must have shape {mean.shape}, got {w_T.shape}")
    d = mean.shape[0]
    dw = mean - w_T
    nrm = float(np.linalg.norm(dw))
    u = dw / nrm if nrm > 0 else np.eye(d)[0]
    uCu = float(u @ cov @ u)
    xs, ws = _trap_normal(int(num)) if rule == "trapezoid" else _gh(int(num))
    alpha = S / np.sqrt(d) * xs
    dT = nrm * alpha
    s2 = float(post.sigma) ** 2 + alpha**2 * uCu + S**2 / d * (np.trace(cov) - uCu)
    return dT, (1 + c) * dT, s2, ws
