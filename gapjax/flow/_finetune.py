"""FT-FM and ResFT-FM: maximum likelihood of few-step reconstructions.

A reconstruction is ``x1_hat = phi_N(x0; v)`` (N fixed solver steps, unrolled
with ``lax.scan``) for a *paired* ``(x0, x1)``; the loss is the Gaussian NLL
``-log N(x1; x1_hat, sigma^2 I)`` with sigma fixed or learned, optionally plus a
flow-matching regulariser.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from gapjax._checks import check_int
from gapjax.flow._cfm import cfm_objective, make_field
from gapjax.flow._solvers import _check_state, _check_steps, odeint, odeint_reference
from gapjax.flow._theory import per_sample_jacobian

PAIRINGS = ("data", "inverse_ode", "independent")


def make_pairs(x1: jax.Array, *, pairing: str, x0: jax.Array | None = None,
               apply_fn: Callable | None = None, params=None, c: jax.Array | None = None,
               chunk_size: int = 512, rtol: float = 1e-5, atol: float = 1e-5) -> dict:
    """Paired training data ``{"x0", "x1"[, "c"]}`` for reconstruction fine-tuning.

    Arguments:
      x1: (B, ...) data.
      pairing: ``"data"`` (pairs given: pass ``x0``), ``"inverse_ode"`` (``x0 =
        phi^{-1}(x1)`` of the pre-trained field ``apply_fn``/``params`` [with
        conditioning ``c``], by the adaptive Dopri5 reference solve, once) or
        ``"independent"`` -- refused: regressing ``x1`` on an independent ``x0``
        has the conditional mean ``E[x1]`` as optimum and collapses every sample
        to the data mean.
      chunk_size: inverse-ODE solves are jitted per chunk of this many points.
    Returns:
      dict of arrays with a common leading axis.
    """
    check_int("chunk_size", chunk_size, min=1)
    x1 = _check_state(x1, "x1")
    if pairing == "independent":
        raise ValueError(
            "pairing='independent' is refused: with x0 independent of x1 the "
            "reconstruction likelihood is maximised by predicting E[x1] for every "
            "x0, which collapses all samples to the data mean. Use pairing='data' "
            "with paired (x0, x1) or pairing='inverse_ode' with the pre-trained field.")
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    if c is not None and jnp.shape(c)[0] != x1.shape[0]:
        raise ValueError(f"c must have leading dimension {x1.shape[0]}, got {jnp.shape(c)}")
    if pairing == "data":
        if x0 is None:
            raise ValueError("pairing='data' needs the paired sources x0")
        x0 = _check_state(x0, "x0")
        if x0.shape != x1.shape:
            raise ValueError(f"x0 must have the shape of x1 {x1.shape}, got {x0.shape}")
    else:
        if apply_fn is None or params is None:
            raise ValueError("pairing='inverse_ode' needs the pre-trained apply_fn and params")

        @jax.jit
        def inv(p, xb, cb):
            return odeint_reference(make_field(apply_fn, p, cb), xb, t0=1.0, t1=0.0,
                                    rtol=rtol, atol=atol)

        outs = []
        for i in range(0, x1.shape[0], chunk_size):
            cb = None if c is None else c[i:i + chunk_size]
            outs.append(inv(params, x1[i:i + chunk_size], cb))
        x0 = jnp.concatenate(outs, 0)
    out = {"x0": x0, "x1": x1}
    if c is not None:
        out["c"] = jnp.asarray(c)
    return out


def init_recon_params(field_params, *, learn_sigma: bool = False, log_sigma: float = 0.0,
                      dim: int | None = None):
    """Parameters of a reconstruction fine-tuning: ``{"field": field_params}`` plus
    ``"log_sigma"`` (scalar, or (dim,) per-dimension) when sigma is learned."""
    if dim is not None:
        check_int("dim", dim, min=1)
    p = {"field": field_params}
    if learn_sigma:
        p["log_sigma"] = jnp.full(() if dim is None else (dim,), log_sigma,
                                  jax.tree.leaves(field_params)[0].dtype)
    return p


def gaussian_recon_nll(x1, x1_hat, log_sigma):
    """Per-sample ``-log N(x1; x1_hat, sigma^2 I)``, (B, ...) -> (B,);
    ``log_sigma`` scalar or per-(flattened)-dimension."""
    if jnp.shape(x1) != jnp.shape(x1_hat):
        raise ValueError(f"x1_hat must have x1's shape {jnp.shape(x1)}, got "
                         f"{jnp.shape(x1_hat)}")
    diff = (x1 - x1_hat).reshape(x1.shape[0], -1)
    d = diff.shape[1]
    ls = jnp.broadcast_to(log_sigma, (d,))[None]
    return (0.5 * jnp.sum(diff**2 * jnp.exp(-2 * ls), -1) + jnp.sum(ls)
            + 0.5 * d * math.log(2 * math.pi))


def _recon_loss(build_field: Callable, *, n_steps: int, method: str, sigma,
                fm_weight: float, conditional: bool, checkpoint: bool):
    _check_steps(n_steps, method)
    learned = isinstance(sigma, str)
    if learned and sigma != "learned":
        raise ValueError(f"sigma must be a positive float or 'learned', got {sigma!r}")
    if not learned and not float(sigma) > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if fm_weight < 0:
        raise ValueError(f"fm_weight must be >= 0, got {fm_weight}")

    def loss_fn(params, collections, batch, key):
        if not isinstance(batch, dict) or "x0" not in batch or "x1" not in batch:
            raise ValueError("batch must be a dict with paired 'x0' and 'x1' "
                             "(build it with make_pairs)")
        if conditional and "c" not in batch:
            raise ValueError("conditional=True but the batch has no 'c'")
        x0, x1 = batch["x0"], batch["x1"]
        if x0.shape != x1.shape:
            raise ValueError(f"x0 {x0.shape} and x1 {x1.shape} must have the same shape")
        c = batch.get("c") if conditional else None
        if learned:
            if "log_sigma" not in params:
                raise ValueError("sigma='learned' needs params['log_sigma'] "
                                 "(see init_recon_params(learn_sigma=True))")
            log_sigma = params["log_sigma"]
        else:
            log_sigma = jnp.asarray(math.log(float(sigma)), x1.dtype)
        field = build_field(params, c)
        x1_hat = odeint(field, x0, n_steps, method=method, checkpoint=checkpoint)
        nll = jnp.mean(gaussian_recon_nll(x1, x1_hat, log_sigma))
        mse = jnp.mean(jnp.sum((x1 - x1_hat).reshape(x1.shape[0], -1) ** 2, -1))
        aux = {"recon_nll": nll, "recon_mse": mse}
        loss = nll
        if fm_weight > 0:
            k0, kt = jax.random.split(key)
            z = jax.random.normal(k0, x1.shape, x1.dtype)
            t = jax.random.uniform(kt, (x1.shape[0],), x1.dtype)
            fm = cfm_objective(field, z, x1, t)
            aux["cfm"] = fm
            loss = loss + fm_weight * fm
        return loss, (collections, aux)

    return loss_fn


def ftfm_loss(apply_fn: Callable, *, n_steps: int, method: str = "euler", sigma=1.0,
              fm_weight: float = 0.0, conditional: bool = False, checkpoint: bool = False):
    """FT-FM loss in the ``gapjax.train`` signature.

    ``params = {"field": ..., ["log_sigma": ...]}`` (:func:`init_recon_params`);
    ``batch = {"x0", "x1"[, "c"]}`` paired (:func:`make_pairs`). Loss
    ``E[-log N(x1; phi_N(x0; v_theta), sigma^2 I)] + fm_weight * L_CFM`` with
    gradients through the unrolled N-step solver. ``sigma``: positive float
    (fixed; the NLL is then the MSE / (2 sigma^2) plus a constant) or
    ``"learned"``.
    """
    def build(params, c):
        return make_field(apply_fn, params["field"], c)

    return _recon_loss(build, n_steps=n_steps, method=method, sigma=sigma,
                       fm_weight=fm_weight, conditional=conditional, checkpoint=checkpoint)


def residual_field(pre_apply: Callable, pre_params, res_apply: Callable, res_params,
                   c=None):
    """ResFT-FM field ``v(x, t) = v_pre(x, t) + r_phi(x, t)``; ``v_pre`` frozen
    (``stop_gradient`` on its parameters)."""
    pre = make_field(pre_apply, jax.lax.stop_gradient(pre_params), c)
    res = make_field(res_apply, res_params, c)
    return lambda x, t: pre(x, t) + res(x, t)


def resft_loss(pre_apply: Callable, pre_params, res_apply: Callable, *, n_steps: int,
               method: str = "euler", sigma=1.0, fm_weight: float = 0.0,
               conditional: bool = False, checkpoint: bool = False):
    """ResFT-FM loss: the FT-FM likelihood with ``v = v_pre (frozen) + r_phi``.

    ``params = {"field": residual params, ["log_sigma"]}``; ``res_apply`` is
    typically :class:`ContractingResidual` whose contraction rate is guaranteed by
    construction. Other arguments as :func:`ftfm_loss`.
    """
    def build(params, c):
        return residual_field(pre_apply, pre_params, res_apply, params["field"], c)

    return _recon_loss(build, n_steps=n_steps, method=method, sigma=sigma,
                       fm_weight=fm_weight, conditional=conditional, checkpoint=checkpoint)


def late_residual_field(pre_apply: Callable, pre_params, res_apply: Callable, res_params,
                        c=None, lambda_pre=None):
    """Combined ResFT-FM field ``v_pre + r_phi`` for a :class:`LateContractingResidual`
    (``res_apply``): ``v_pre`` (frozen) is evaluated once and fed to the residual
    on the same traced ``x``, so ``jacfwd`` of the result is the combined field's
    Jacobian. ``lambda_pre``: the window's bound table (``beta < 1`` only)."""
    pre = make_field(pre_apply, jax.lax.stop_gradient(pre_params), c)
    variables = {"params": res_params}

    def field(x, t):
        v = pre(x, t)
        return v + res_apply(variables, x, t, c, v_pre=v, lambda_pre=lambda_pre)

    return field


def late_resft_loss(pre_apply: Callable, pre_params, res_apply: Callable, *, n_steps: int,
                    lambda_pre=None, method: str = "euler", sigma=1.0,
                    fm_weight: float = 0.0, conditional: bool = False,
                    checkpoint: bool = False):
    """ResFT-FM loss with the late-window residual (:func:`late_residual_field`);
    ``params = {"field": residual params, ["log_sigma"]}``, other arguments as
    :func:`ftfm_loss`."""
    def build(params, c):
        return late_residual_field(pre_apply, pre_params, res_apply, params["field"], c,
                                   lambda_pre)

    return _recon_loss(build, n_steps=n_steps, method=method, sigma=sigma,
                       fm_weight=fm_weight, conditional=conditional, checkpoint=checkpoint)


def estimate_lambda_pre(field: Callable, xs: jax.Array, ts: jax.Array, *,
                        margin: float = 0.0) -> jax.Array:
    """Bounds ``lambda_pre(t_k) = max_b lambda_max(sym J_x field(xs[k, b], t_k)) + margin``.

    ``xs`` (K, B, ...) states visited at the K times ``ts`` (K,) (e.g. along
    trajectories of the pre-trained sampler, at ``linspace(t_c, t_e, K)``);
    returns (K,). An empirical bound: it holds where the samples are
    representative, which :func:`certify_contraction` on the combined field
    checks afterwards.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    ts = jnp.asarray(ts)
    if xs.ndim < 3 or ts.shape != xs.shape[:1]:
        raise ValueError(f"xs must be (K, B, ...) with ts (K,), got {xs.shape} and {ts.shape}")
    return jnp.stack([certify_contraction(field, xs[k], ts[k])
                      for k in range(ts.shape[0])]) + margin


def certify_contraction(field: Callable, x: jax.Array, t: jax.Array) -> jax.Array:
    """Numerical contraction certificate: ``max_b lambda_max(sym(J_x field(x_b, t_b)))``.

    ``x`` (B, ...), ``t`` (B,) (or scalar). A field is contracting at rate ``c``
    on the samples when the result is ``<= -c``. Jacobians by ``jacfwd``.
    """
    x = _check_state(x, "x")
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])

    def one(xi, ti):
        jac = per_sample_jacobian(field, xi[None], ti)[0]
        return jnp.linalg.eigvalsh(0.5 * (jac + jac.T))[-1]

    return jax.jit(lambda xx, tt: jnp.max(jax.vmap(one)(xx, tt)))(x, t)


def pair_distances(field: Callable, xa: jax.Array, xb: jax.Array, n_steps: int, *,
                   method: str = "rk4", t0: float = 0.0, t1: float = 1.0):
    """``||x_a(t_k) - x_b(t_k)||`` for two solutions of the same field, at the
    N+1 grid times ``t_k``; returns ``(ts (N+1,), dist (N+1, B))``.

    For a field with ``sym(J) <= lambda(t) I`` the contraction theorem gives
    ``dist(t) <= exp(int_0^t lambda) dist(0)`` (Lohmiller & Slotine 1998).
    """
    xa, xb = _check_state(xa, "xa"), _check_state(xb, "xb")
    if xa.shape != xb.shape:
        raise ValueError(f"xb must have xa's shape {xa.shape}, got {xb.shape}")
    both = jnp.concatenate([xa, xb], 0)
    _, path = odeint(field, both, n_steps, method=method, t0=t0, t1=t1, return_path=True)
    path = jnp.concatenate([both[None], path], 0)
    b = xa.shape[0]
    diff = (path[:, :b] - path[:, b:]).reshape(n_steps + 1, b, -1)
    ts = t0 + (t1 - t0) * jnp.arange(n_steps + 1, dtype=xa.dtype) / n_steps
    return ts, jnp.linalg.norm(diff, axis=-1)


def perturbation_deviation(field: Callable, x0: jax.Array, perturbation: jax.Array,
                           n_steps: int, at_step: int, *, method: str = "euler"):
    """Final deviation ``||phi_N(x0) - phi_N'(x0)||`` (B,) when ``perturbation``
    (B, ...) is added to the state after ``at_step`` of the N steps (the
    mid-rollout robustness measurement of ResFT-FM)."""
    _check_steps(n_steps, method)
    if not 0 <= at_step <= n_steps:
        raise ValueError(f"at_step must be in [0, {n_steps}], got {at_step}")
    dt = 1.0 / n_steps
    t_mid = at_step * dt

    def run(x, pert):
        if at_step > 0:
            x = odeint(field, x, at_step, method=method, t0=0.0, t1=t_mid)
        x = x + pert
        if at_step < n_steps:
            x = odeint(field, x, n_steps - at_step, method=method, t0=t_mid, t1=1.0)
        return x

    a = run(x0, jnp.zeros_like(perturbation))
    b = run(x0, perturbation)
    return jnp.linalg.norm((a - b).reshape(a.shape[0], -1), axis=-1)
