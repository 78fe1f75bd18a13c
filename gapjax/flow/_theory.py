"""Closed forms of the linear-path flow, Theorem 1's bound, stiffness diagnostics.

Source ``N(0, I)``, independent coupling, linear path ``x_t = (1-t) x0 + t x1``.
For a Gaussian target ``N(mu, s^2 I)``:

* ``sigma_t^2 = (1-t)^2 + t^2 s^2``,
* ``v*(x, t) = mu + (t s^2 - (1-t)) / sigma_t^2 * (x - t mu)``,
* trajectories ``psi_t(x0) = t mu + sigma_t x0``, flow map ``x1 = mu + s x0``,
* ``d^2 psi_t / dt^2 = s^2 / sigma_t^3 * x0`` (largest at ``t = 1/(1+s^2)``),
* minimal CFM loss per dimension ``int_0^1 s^2 / sigma_t^2 dt = (pi/2) s``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from gapjax._checks import check_positive


def _check_mixture(mixture):
    if not all(hasattr(mixture, a) for a in ("weights", "means", "stds")):
        raise TypeError(f"mixture must be a gapjax.data.GaussianMixture (weights, means, "
                        f"stds), got {type(mixture).__name__}")


def _check_s(s):
    check_positive("s", s)   # the target std


def gaussian_sigma_t(t, s):
    """``sigma_t = sqrt((1-t)^2 + t^2 s^2)``: std of the path marginal."""
    _check_s(s)
    return jnp.sqrt((1 - t) ** 2 + (t * s) ** 2)


def gaussian_field_slope(t, s):
    """``a(t) = (t s^2 - (1-t)) / sigma_t^2``, so ``v* = mu + a(t)(x - t mu)``;
    ``a(t)`` is also the Jacobian ``dv*/dx = a(t) I``."""
    _check_s(s)
    return (t * s**2 - (1 - t)) / ((1 - t) ** 2 + (t * s) ** 2)


def gaussian_optimal_field(x, t, mu, s):
    """Marginal (optimal) velocity for source N(0, I), target N(mu, s^2 I).

    Arguments: ``x`` (B, D); ``t`` scalar or (B,); ``mu`` scalar or (D,); ``s > 0``.
    Returns: (B, D).
    """
    _check_s(s)
    t = jnp.asarray(t, x.dtype)
    t = t[..., None] if t.ndim == 1 else t
    mu = jnp.asarray(mu, x.dtype)
    mu = mu[None] if mu.ndim == 1 else mu
    return mu + gaussian_field_slope(t, s) * (x - t * mu)


def gaussian_path(x0, t, mu, s):
    """Exact trajectory ``psi_t(x0) = t mu + sigma_t x0`` of the optimal field."""
    return t * mu + gaussian_sigma_t(t, s) * x0


def gaussian_flow_map(x0, mu, s):
    """Exact flow map ``phi(x0) = mu + s x0`` (noise -> data)."""
    _check_s(s)
    return mu + s * x0


def gaussian_min_cfm_loss(s):
    """Minimal CFM loss per dimension, ``int_0^1 s^2/sigma_t^2 dt = (pi/2) s``."""
    _check_s(s)
    return 0.5 * math.pi * s


def gaussian_field_lipschitz(s, num: int = 200001) -> float:
    """``L_u = max_t |a(t)|``, Lipschitz constant of ``v*`` in x over t in [0, 1]
    (dense float64 grid; approximately ``1/(2s)`` near ``t = 1 - s`` for small s)."""
    _check_s(s)
    t = np.linspace(0.0, 1.0, num)
    return float(np.max(np.abs(gaussian_field_slope(t, float(s)))))


def gaussian_path_acceleration_max(s, x0_max: float) -> float:
    """``M = max_t ||d^2 psi_t/dt^2||`` over ``|x0| <= x0_max``:
    ``s^2 / sigma_min^3 * x0_max`` with ``sigma_min^2 = s^2 / (1 + s^2)``."""
    _check_s(s)
    sig_min = s / math.sqrt(1 + s**2)
    return s**2 / sig_min**3 * x0_max


def gmm_log_prob_t(x, t, mixture):
    """Log density of the path marginal ``p_t = sum_k pi_k N(t mu_k, sigma_{k,t}^2 I)``.

    ``mixture``: :class:`gapjax.data.GaussianMixture`; ``x`` (B, D); ``t`` scalar.
    """
    _check_mixture(mixture)
    comp, _ = _gmm_components(x, t, mixture)
    return jax.scipy.special.logsumexp(comp, axis=-1)


def _gmm_components(x, t, mixture):
    d = x.shape[-1]
    var = (1 - t) ** 2 + (t * mixture.stds) ** 2  # (K,)
    diff = x[:, None, :] - t * mixture.means[None]  # (B, K, D)
    logn = (-0.5 * jnp.sum(diff**2, -1) / var[None] - 0.5 * d * jnp.log(2 * math.pi * var)[None])
    return logn + jnp.log(mixture.weights)[None], var


def gmm_optimal_field(x, t, mixture):
    """Optimal field for a Gaussian-mixture target: ``sum_k w_k(x, t) v*_k(x, t)``
    with ``w_k ∝ pi_k N(x; t mu_k, sigma_{k,t}^2 I)`` and ``v*_k`` the component's
    Gaussian field. ``x`` (B, D), ``t`` scalar -> (B, D)."""
    _check_mixture(mixture)
    comp, var = _gmm_components(x, t, mixture)
    w = jax.nn.softmax(comp, axis=-1)  # (B, K)
    slope = (t * mixture.stds**2 - (1 - t)) / var  # (K,)
    vk = mixture.means[None] + slope[None, :, None] * (x[:, None, :] - t * mixture.means[None])
    return jnp.sum(w[..., None] * vk, axis=1)


def theorem1_bound(delta, lip_u, accel_max, taus, eps0=0.0):
    """Theorem 1's bound on the final error of N Euler steps with a learned field.

    ``||eps_N|| <= exp(L_u t_{N-1}) sum_j (delta tau_j + 0.5 M tau_j^2) + ||eps_0||``
    with ``t_{N-1} = tau_1 + ... + tau_{N-1}`` (the start time of the last step).

    Arguments:
      delta: ``sup ||v_theta - u||`` over the region visited.
      lip_u: Lipschitz constant ``L_u`` of the true field.
      accel_max: ``M = max ||d^2 psi_t / dt^2||`` along true trajectories.
      taus: (N,) step sizes (``1/N`` each for uniform steps).
      eps0: initial error.
    Returns:
      the bound (scalar).
    """
    taus = jnp.asarray(taus)
    if taus.ndim != 1 or taus.shape[0] < 1:
        raise ValueError(f"taus must be a non-empty 1-D array, got shape {taus.shape}")
    check_positive("taus", taus)
    for name, v in (("delta", delta), ("lip_u", lip_u), ("accel_max", accel_max), ("eps0", eps0)):
        if not isinstance(v, jax.core.Tracer) and not np.all(np.asarray(v) >= 0):
            raise ValueError(f"{name} must be >= 0, got {v}")
    t_last = jnp.sum(taus[:-1])
    local = jnp.sum(delta * taus + 0.5 * accel_max * taus**2)
    return jnp.exp(lip_u * t_last) * local + eps0


def jacobian_norms(field, x, t):
    """Spectral norm of ``d field / dx`` per sample: (B, ...) at scalar t -> (B,).

    The stiffness diagnostic: evaluate it along trajectories (see
    :func:`trajectory_jacobian_norms`); its maximum estimates the field's
    Lipschitz constant on the region the sampler visits.
    """
    jac = per_sample_jacobian(field, x, t)
    return jnp.linalg.norm(jac, ord=2, axis=(-2, -1))


def per_sample_jacobian(field, x, t):
    """(B, ...) -> (B, D, D) Jacobians of a batched field (D = flattened size)."""
    shape = x.shape[1:]

    def f1(xi):
        return field(xi.reshape((1,) + shape), t).reshape(-1)

    return jax.vmap(jax.jacfwd(f1))(x.reshape(x.shape[0], -1))


def trajectory_jacobian_norms(field, x0, n_steps: int, *, method: str = "euler"):
    """Jacobian spectral norms at the states an N-step sampler visits.

    Returns ``(ts, norms)`` with ``ts`` (N,) the step start times and ``norms``
    (N, B). ``max(norms)`` is the empirical Lipschitz constant (stiffness).
    """
    from gapjax.flow._solvers import odeint

    _, path = odeint(field, x0, n_steps, method=method, return_path=True)
    starts = jnp.concatenate([x0[None], path[:-1]], 0)
    ts = jnp.arange(n_steps, dtype=x0.dtype) / n_steps
    norms = jax.lax.map(lambda a: jacobian_norms(field, a[0], a[1]), (starts, ts))
    return ts, norms
