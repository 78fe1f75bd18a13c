"""RePRI transductive inference (Boudiaf et al., CVPR 2021), one task at a time,
jit-compiled and vmapped over tasks.

Everything here follows the official ``src/classifier.py`` + ``src/test.py``
(see the subpackage docstring for the list of constants and their placements).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gapjax._checks import (as_float_array, check_int, check_ndim, check_positive,
                            check_shape)

EPS = 1e-10          # official epsilon: cosine, prototype count, KL's pi, logs
NORM_EPS = 1e-12     # F.normalize's clamp of the feature norm
IGNORE = 255         # ignore label of the masks


@dataclasses.dataclass(frozen=True)
class RePRIConfig:
    """Hyper-parameters of the inference (hashable: a static jit argument).

    Attributes:
      temperature: ``tau`` in ``logit = tau * cos(f, w)`` (official 20).
      lr: SGD learning rate on ``(w, b)`` (official 0.025, no momentum).
      num_updates: number of SGD updates (official ``adapt_iter=50`` ->
        ``range(1, 50)`` = 49 updates; 0 gives the initial classifier).
      lambda_ce: weight of the support cross-entropy (official 1).
      lambda_kl: weight of the KL term; ``None`` = ``1 / K`` (official 'auto').
      lambda_h: weight of the query entropy; ``None`` = ``1 / K``.
      pi_update_at: loop counter at which ``pi`` is re-estimated and
        ``lambda_kl += 1`` (official ``FB_param_update=[10]``: right after the
        9th update). ``None`` never re-estimates. Ignored when ``pi`` is given
        (oracle / fixed pi) or when ``lambda_kl == 0`` (as the official code).
      normalize_features: L2-normalise features along channels first
        (official ``norm_feat=True``; norm clamped at 1e-12).
    """

    temperature: float = 20.0
    lr: float = 0.025
    num_updates: int = 49
    lambda_ce: float = 1.0
    lambda_kl: float | None = None
    lambda_h: float | None = None
    pi_update_at: int | None = 10
    normalize_features: bool = True

    def __post_init__(self):
        for name in ("temperature", "lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"RePRIConfig.{name} must be a finite number > 0, got {v!r}")
        if not isinstance(self.num_updates, (int, np.integer)) or self.num_updates < 0:
            raise ValueError(f"RePRIConfig.num_updates must be an int >= 0, got "
                             f"{self.num_updates!r}")
        for name in ("lambda_ce", "lambda_kl", "lambda_h"):
            v = getattr(self, name)
            if v is None and name != "lambda_ce":
                continue
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise ValueError(f"RePRIConfig.{name} must be a finite number >= 0"
                                 f"{' or None (= 1/K)' if name != 'lambda_ce' else ''}, "
                                 f"got {v!r}")
        if self.pi_update_at is not None and (
                not isinstance(self.pi_update_at, (int, np.integer)) or self.pi_update_at < 2):
            raise ValueError(f"RePRIConfig.pi_update_at must be an int >= 2 (a loop "
                             f"counter, the update happens after update pi_update_at-1) "
                             f"or None, got {self.pi_update_at!r}")

    def weights(self, shots: int) -> tuple[float, float, float]:
        """``(lambda_ce, lambda_kl, lambda_h)`` for ``shots`` support images."""
        auto = 1.0 / shots
        return (float(self.lambda_ce),
                auto if self.lambda_kl is None else float(self.lambda_kl),
                auto if self.lambda_h is None else float(self.lambda_h))


# Presets: the official defaults, its ablations and the two inductive baselines.
REPRI = RePRIConfig()
"""Official RePRI: weights [1, 1/K, 1/K], 49 updates, pi re-estimated at 10."""
CE_ONLY = RePRIConfig(lambda_kl=0.0, lambda_h=0.0)
"""Inductive baseline: support cross-entropy only (official weights [1, 0, 0])."""
CE_H = RePRIConfig(lambda_kl=0.0)
"""Ablation CE + H (no KL, hence no pi update, as the official code)."""
PROTOTYPE = RePRIConfig(num_updates=0)
"""Inductive baseline: the initial classifier (prototype, mean-logit bias)."""
ORACLE = RePRIConfig(lambda_ce=1.0, lambda_kl=1.0, lambda_h=0.1, num_updates=299,
                     pi_update_at=None)
"""Official oracle run (scripts/oracle.sh): true pi, weights [1, 1, 0.1], 299 updates."""


class Classifier(NamedTuple):
    """One task's linear classifier: prototype ``w`` (C,) and scalar bias ``b``."""

    prototype: jax.Array
    bias: jax.Array


class RePRIResult(NamedTuple):
    """Output of :func:`repri` (leading task axis in the batched version).

    Attributes:
      classifier: final :class:`Classifier`.
      pi: (2,) final ``[pi_bg, pi_fg]`` used by the KL term.
      lambda_kl: () final KL weight.
      history: dict of (num_updates,) arrays, entry ``t`` measured at loop
        counter ``t + 1`` *before* its update: ``loss``, ``ce``, ``kl``, ``h``,
        ``marginal_fg`` (mean query foreground probability), ``pi_fg`` and
        ``lambda_kl`` (the values the update used).
    """

    classifier: Classifier
    pi: jax.Array
    lambda_kl: jax.Array
    history: dict


# --------------------------------------------------------------------------
# Resampling (static index/weight tables computed with NumPy at trace time).

def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """PyTorch ``F.interpolate(mode='nearest', size=out)`` source indices.

    ``src = min(floor(dst * float32(in / out)), in - 1)``, computed in float32
    exactly as ATen does (floor-based, not rounding).
    """
    in_size = check_int("in_size", in_size, min=1)
    out_size = check_int("out_size", out_size, min=1)
    scale = np.float32(in_size) / np.float32(out_size)
    idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, in_size - 1)


def _check_size(name, size):
    """``(H, W)`` of positive Python/NumPy integers."""
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        raise ValueError(f"{name} must be (H, W), got {size!r}")
    return tuple(check_int(name, s, min=1) for s in size)


def downsample_mask(mask: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Nearest-neighbour (floor-based) resampling of (..., H, W) labels to ``size``."""
    check_ndim("mask", mask, min_ndim=2)
    size = _check_size("size", size)
    hi = nearest_indices(mask.shape[-2], size[0])
    wi = nearest_indices(mask.shape[-1], size[1])
    return jnp.take(jnp.take(mask, hi, axis=-2), wi, axis=-1)


def _bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) matrix of 1-D linear interpolation with ``align_corners=True``."""
    m = np.zeros((out_size, in_size), np.float64)
    if in_size == 1 or out_size == 1:
        m[:, 0] = 1.0
        return m
    src = np.arange(out_size) * (in_size - 1) / (out_size - 1)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    m[np.arange(out_size), lo] += 1.0 - frac
    m[np.arange(out_size), hi] += frac
    return m


def upsample_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize of (..., h, w) to (..., H, W) with ``align_corners=True``
    (``F.interpolate(mode='bilinear', align_corners=True)``)."""
    x = as_float_array("x", x, min_ndim=2)
    size = _check_size("size", size)
    mh = jnp.asarray(_bilinear_matrix(x.shape[-2], size[0]), x.dtype)
    mw = jnp.asarray(_bilinear_matrix(x.shape[-1], size[1]), x.dtype)
    return jnp.einsum("Hh,...hw,Ww->...HW", mh, x, mw)


# --------------------------------------------------------------------------
# The classifier.

def l2_normalize(f: jax.Array) -> jax.Array:
    """``f / max(|f|, 1e-12)`` along the last (channel) axis (``F.normalize``)."""
    n = jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True))
    return f / jnp.maximum(n, NORM_EPS)


def cosine_logits(features: jax.Array, prototype: jax.Array,
                  temperature: float) -> jax.Array:
    """``tau * <f, w> / (|f| |w| + 1e-10)`` for features (..., C) -> (...)."""
    check_positive("temperature", temperature)
    features = as_float_array("features", features, min_ndim=1)
    check_shape("prototype", prototype, (features.shape[-1],), "(C,) like features' last axis")
    dot = jnp.einsum("...c,c->...", features, prototype)
    fn = jnp.sqrt(jnp.sum(features * features, axis=-1))
    wn = jnp.sqrt(jnp.sum(prototype * prototype))
    return temperature * (dot / (fn * wn + EPS))


def fg_probability(logits: jax.Array, bias: jax.Array) -> jax.Array:
    """``p_fg = sigmoid(logit - b)``; ``p_bg = 1 - p_fg``."""
    return jax.nn.sigmoid(logits - bias)


def init_classifier(support_feats, support_fg, query_feats, temperature: float
                    ) -> Classifier:
    """Official initialisation.

    ``w = sum_{k,pixels} fg * f / (sum fg + 1e-10)`` pooled over all shots and
    pixels; ``b = mean of tau * cos(f_q, w)`` over *all* query pixels.
    Shapes: support_feats (K, h, w, C), support_fg (K, h, w) {0, 1}, query_feats
    (h, w, C).
    """
    fg = support_fg.astype(support_feats.dtype)
    proto = jnp.einsum("khw,khwc->c", fg, support_feats) / (jnp.sum(fg) + EPS)
    bias = jnp.mean(cosine_logits(query_feats, proto, temperature))
    return Classifier(proto, bias)


def _probs(clf: Classifier, feats, temperature):
    p_fg = fg_probability(cosine_logits(feats, clf.prototype, temperature), clf.bias)
    return jnp.stack([1.0 - p_fg, p_fg], axis=-1)          # (..., 2) = [bg, fg]


def estimate_pi(clf: Classifier, query_feats, query_valid, temperature) -> jax.Array:
    """``[pi_bg, pi_fg]``: mean ``[p_bg, p_fg]`` over valid query pixels (no grad)."""
    p = jax.lax.stop_gradient(_probs(clf, query_feats, temperature))
    v = query_valid.astype(p.dtype)
    return jnp.einsum("hw,hwk->k", v, p) / jnp.sum(v)


def loss_terms(clf: Classifier, support_feats, support_labels, support_valid,
               query_feats, query_valid, pi, temperature: float) -> dict:
    """The three RePRI terms of one task (paper Eq. 1-4, official placements).

    Arguments:
      clf: :class:`Classifier`.
      support_feats: (K, h, w, C); support_labels: (K, h, w) {0, 1} (ignore
        pixels may hold anything, they are masked by support_valid);
      support_valid: (K, h, w) bool; query_feats: (h, w, C); query_valid: (h, w)
        bool; pi: (2,) ``[pi_bg, pi_fg]``.
    Returns:
      dict with ``ce`` (support CE over valid pixels of all shots), ``kl``
      (``sum_k phat_k log(phat_k / (pi_k + 1e-10))``), ``h`` (mean entropy of
      valid query pixels) and ``marginal`` (2,) ``phat``.
    """
    ps = _probs(clf, support_feats, temperature)                  # (K,h,w,2)
    pq = _probs(clf, query_feats, temperature)                    # (h,w,2)
    vs = support_valid.astype(ps.dtype)
    vq = query_valid.astype(pq.dtype)
    onehot = jax.nn.one_hot(support_labels, 2, dtype=ps.dtype)    # (K,h,w,2)
    ce = -jnp.sum(vs[..., None] * onehot * jnp.log(ps + EPS)) / jnp.sum(vs)
    nq = jnp.sum(vq)
    h = -jnp.sum(vq[..., None] * pq * jnp.log(pq + EPS)) / nq
    marginal = jnp.einsum("hw,hwk->k", vq, pq) / nq
    kl = jnp.sum(marginal * jnp.log(marginal / (pi + EPS)))
    return {"ce": ce, "kl": kl, "h": h, "marginal": marginal}


def _prepare(support_feats, support_masks, query_feats, query_valid, normalize):
    h, w = query_feats.shape[:2]
    if normalize:
        support_feats = l2_normalize(support_feats)
        query_feats = l2_normalize(query_feats)
    ds = downsample_mask(support_masks, (h, w)).astype(jnp.int32)
    s_valid = ds != IGNORE
    s_fg = ds == 1
    q_valid = downsample_mask(query_valid, (h, w)).astype(bool)
    return support_feats, s_fg, s_valid, query_feats, q_valid


def _repri_core(support_feats, support_masks, query_feats, query_valid, pi_fg,
                weights, config: RePRIConfig) -> RePRIResult:
    """Unvalidated single-task inference (traceable; ``pi_fg`` None = estimate).

    ``weights`` = ``(lambda_ce, lambda_kl, lambda_h)`` are traced values so that
    configs differing only in their weights share one compilation; ``config``
    supplies the static part (temperature, lr, updates, pi schedule).
    """
    tau = config.temperature
    l_ce, l_kl0, l_h = weights
    fs, s_fg, s_valid, fq, q_valid = _prepare(support_feats, support_masks,
                                              query_feats, query_valid,
                                              config.normalize_features)
    dtype = fs.dtype
    l_ce, l_kl0, l_h = (jnp.asarray(x, dtype) for x in (l_ce, l_kl0, l_h))
    clf = init_classifier(fs, s_fg, fq, tau)
    if pi_fg is None:
        pi = estimate_pi(clf, fq, q_valid, tau)
        update_pi = config.pi_update_at is not None
    else:
        pi_fg = jnp.asarray(pi_fg, dtype)
        pi = jnp.stack([1.0 - pi_fg, pi_fg])
        update_pi = False
    labels = s_fg.astype(jnp.int32)

    def loss_fn(c, pi, lam_kl):
        t = loss_terms(c, fs, labels, s_valid, fq, q_valid, pi, tau)
        return l_ce * t["ce"] + lam_kl * t["kl"] + l_h * t["h"], t

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def body(carry, it):
        c, pi, lam = carry
        g, t = grad_fn(c, pi, lam)
        rec = {"loss": l_ce * t["ce"] + lam * t["kl"] + l_h * t["h"], "ce": t["ce"],
               "kl": t["kl"], "h": t["h"], "marginal_fg": t["marginal"][1],
               "pi_fg": pi[1], "lambda_kl": lam}
        c = jax.tree.map(lambda p, gp: p - config.lr * gp, c, g)
        if update_pi:
            # Official: only when the KL weight is non-zero.
            hit = ((it + 1) == config.pi_update_at) & (l_kl0 != 0)
            pi = jnp.where(hit, estimate_pi(c, fq, q_valid, tau), pi)
            lam = jnp.where(hit, lam + 1.0, lam)
        return (c, pi, lam), rec

    iters = jnp.arange(1, config.num_updates + 1)
    (clf, pi, lam), hist = jax.lax.scan(body, (clf, pi, l_kl0), iters)
    return RePRIResult(clf, pi, lam, hist)


def _static(config: RePRIConfig) -> RePRIConfig:
    """The compile-relevant part of ``config`` (weights are traced)."""
    return dataclasses.replace(config, lambda_ce=1.0, lambda_kl=None, lambda_h=None)


def _predict_core(clf: Classifier, query_feats, image_size, temperature, normalize):
    fq = l2_normalize(query_feats) if normalize else query_feats
    logits = cosine_logits(fq, clf.prototype, temperature)        # (h, w)
    up = upsample_bilinear(logits, image_size)
    p_fg = fg_probability(up, clf.bias)
    pred = (p_fg > 1.0 - p_fg).astype(jnp.int32)   # argmax([p_bg, p_fg]), ties -> bg
    return p_fg, pred


# --------------------------------------------------------------------------
# Validation (Python, before tracing).

def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_float(name, x):
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating array, got dtype {x.dtype}")


def _validate(support_feats, support_masks, query_feats, query_valid, pi_fg,
              batched: bool):
    lead = 1 if batched else 0
    tname = "(T, " if batched else "("
    for name, x in (("support_feats", support_feats), ("support_masks", support_masks),
                    ("query_feats", query_feats), ("query_valid", query_valid)):
        if not hasattr(x, "shape"):
            raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if support_feats.ndim != 4 + lead:
        raise ValueError(f"support_feats must be {tname}K, h, w, C), got shape "
                         f"{support_feats.shape}")
    _check_float("support_feats", support_feats)
    _check_float("query_feats", query_feats)
    K = support_feats.shape[lead]
    if K == 0:
        raise ValueError("support_feats has K = 0 shots; at least one support "
                         "image is required")
    h, w, C = support_feats.shape[lead + 1:]
    if query_feats.shape[lead:] != (h, w, C) or query_feats.ndim != 3 + lead:
        raise ValueError(f"query_feats must be {tname}{h}, {w}, {C}) to match "
                         f"support_feats {support_feats.shape}, got {query_feats.shape}")
    if support_masks.ndim != 3 + lead or support_masks.shape[lead] != K:
        raise ValueError(f"support_masks must be {tname}{K}, H, W) to match the K={K} "
                         f"shots of support_feats, got shape {support_masks.shape}")
    if query_valid.ndim != 2 + lead:
        raise ValueError(f"query_valid must be {tname}Hq, Wq), got shape "
                         f"{query_valid.shape}")
    if batched:
        T = support_feats.shape[0]
        for name, x in (("support_masks", support_masks), ("query_feats", query_feats),
                        ("query_valid", query_valid)):
            if x.shape[0] != T:
                raise ValueError(f"{name} has {x.shape[0]} tasks, support_feats has {T}")
    for name, x in (("support_masks", support_masks), ("query_valid", query_valid)):
        H, W = x.shape[-2:]
        if H < h or W < w:
            raise ValueError(f"{name} spatial size {(H, W)} is smaller than the "
                             f"feature grid {(h, w)}; masks are given at image "
                             f"resolution and downsampled by nearest neighbour")
    if jnp.issubdtype(support_masks.dtype, jnp.floating):
        raise TypeError(f"support_masks must hold integer labels {{0, 1, 255}}, got "
                        f"dtype {support_masks.dtype}")
    if pi_fg is not None:
        shape = np.shape(pi_fg)
        want = (support_feats.shape[0],) if batched else ()
        if shape != want:
            raise ValueError(f"pi must have shape {want} (foreground proportion"
                             f"{' per task' if batched else ''}), got {shape}")
        if _is_concrete(pi_fg):
            p = np.asarray(pi_fg, np.float64)
            if not np.all((p >= 0) & (p <= 1)):
                raise ValueError(f"pi must lie in [0, 1], got {p}")
    # Value checks on concrete inputs (skipped under an outer jit).
    if _is_concrete(support_feats) and _is_concrete(query_feats):
        if not (bool(jnp.all(jnp.isfinite(support_feats)))
                and bool(jnp.all(jnp.isfinite(query_feats)))):
            raise ValueError("support_feats / query_feats contain NaN or inf")
    if _is_concrete(support_masks):
        m = np.asarray(support_masks)
        bad = ~np.isin(m, (0, 1, IGNORE))
        if bad.any():
            raise ValueError(f"support_masks must hold labels 0 (background), 1 "
                             f"(foreground) or 255 (ignore); found "
                             f"{np.unique(m[bad])[:5].tolist()}")
        ds = m[..., nearest_indices(m.shape[-2], h), :][..., nearest_indices(m.shape[-1], w)]
        nfg = (ds == 1).reshape(ds.shape[:lead + 0] + (-1,)).sum(-1) if batched \
            else np.array([(ds == 1).sum()])
        if np.any(nfg == 0):
            which = np.flatnonzero(nfg == 0).tolist()
            raise ValueError(f"support set has no foreground pixel on the {h}x{w} "
                             f"feature grid (after nearest downsampling)"
                             f"{f' in tasks {which[:10]}' if batched else ''}; the "
                             f"prototype would be undefined")
    if _is_concrete(query_valid):
        q = np.asarray(query_valid).astype(bool)
        ds = q[..., nearest_indices(q.shape[-2], h), :][..., nearest_indices(q.shape[-1], w)]
        nv = ds.reshape(ds.shape[:lead] + (-1,)).sum(-1)
        if np.any(nv == 0):
            raise ValueError("query_valid has no valid pixel on the feature grid"
                             f"{' in tasks ' + str(np.flatnonzero(np.atleast_1d(nv == 0))[:10].tolist()) if batched else ''}"
                             "; the entropy and KL terms would be undefined")


def _check_config(config):
    if not isinstance(config, RePRIConfig):
        raise TypeError(f"config must be a RePRIConfig, got {type(config).__name__}")


# --------------------------------------------------------------------------
# Public entry points.

_core_jit = jax.jit(_repri_core, static_argnames=("config",))


@functools.partial(jax.jit, static_argnames=("config",))
def _batch_jit(support_feats, support_masks, query_feats, query_valid, pi_fg, weights,
               config):
    if pi_fg is None:
        return jax.vmap(lambda a, b, c, d: _repri_core(a, b, c, d, None, weights, config))(
            support_feats, support_masks, query_feats, query_valid)
    return jax.vmap(lambda a, b, c, d, e: _repri_core(a, b, c, d, e, weights, config))(
        support_feats, support_masks, query_feats, query_valid, pi_fg)


def repri(support_feats, support_masks, query_feats, query_valid, *, pi=None,
          config: RePRIConfig = REPRI) -> RePRIResult:
    """RePRI inference for one task (official behaviour).

    Minimises ``lambda_ce CE + lambda_kl KL(phat || pi) + lambda_h H`` (paper
    Eq. 5) over a prototype ``w`` and bias ``b`` with plain SGD.

    Arguments:
      support_feats: (K, h, w, C) float support features.
      support_masks: (K, H, W) int labels {0, 1, 255} at any resolution >= the
        feature grid; downsampled by floor-based nearest neighbour.
      query_feats: (h, w, C) float query features.
      query_valid: (Hq, Wq) bool, False on ignore-labelled query pixels (used by
        the entropy / KL terms and the pi estimate only; the initial bias uses
        all pixels).
      pi: ``None`` to estimate the foreground proportion (and re-estimate it
        once at ``config.pi_update_at``), or a fixed foreground proportion in
        [0, 1] (oracle / fixed pi; never re-estimated).
      config: :class:`RePRIConfig` (``REPRI``, ``ORACLE``, ``CE_ONLY``, ...).
    Returns:
      :class:`RePRIResult`.
    """
    _check_config(config)
    support_feats, query_feats = jnp.asarray(support_feats), jnp.asarray(query_feats)
    support_masks, query_valid = jnp.asarray(support_masks), jnp.asarray(query_valid)
    _validate(support_feats, support_masks, query_feats, query_valid, pi, False)
    return _core_jit(support_feats, support_masks, query_feats, query_valid,
                     None if pi is None else jnp.asarray(pi),
                     config.weights(support_feats.shape[0]), config=_static(config))


def repri_batch(support_feats, support_masks, query_feats, query_valid, *, pi=None,
                config: RePRIConfig = REPRI) -> RePRIResult:
    """:func:`repri` vmapped over a leading task axis ``T`` in one jit call.

    Shapes are those of :func:`repri` with a leading ``T``; ``pi`` is ``None``
    or (T,). Equivalent to the official batched code, whose task losses are
    summed so each task's SGD step is independent of the others.
    """
    _check_config(config)
    support_feats, query_feats = jnp.asarray(support_feats), jnp.asarray(query_feats)
    support_masks, query_valid = jnp.asarray(support_masks), jnp.asarray(query_valid)
    _validate(support_feats, support_masks, query_feats, query_valid, pi, True)
    return _batch_jit(support_feats, support_masks, query_feats, query_valid,
                      None if pi is None else jnp.asarray(pi),
                      config.weights(support_feats.shape[1]), config=_static(config))


_predict_jit = jax.jit(_predict_core, static_argnames=("image_size", "temperature",
                                                       "normalize"))
_predict_batch_jit = jax.jit(jax.vmap(_predict_core, in_axes=(0, 0, None, None, None)),
                             static_argnames=("image_size", "temperature", "normalize"))


def predict(classifier: Classifier, query_feats, image_size: tuple[int, int], *,
            config: RePRIConfig = REPRI):
    """Query segmentation at image resolution (official ``test.py``).

    Cosine logits on the feature grid are upsampled bilinearly
    (``align_corners=True``) to ``image_size``, then ``p_fg = sigmoid(. - b)``
    and the label is ``argmax([1 - p_fg, p_fg])`` (ties -> background).

    Arguments:
      classifier: :class:`Classifier` (leading task axis allowed: then
        ``query_feats`` is (T, h, w, C)).
      query_feats: (h, w, C) or (T, h, w, C).
      image_size: ``(H, W)``.
    Returns:
      ``(p_fg, pred)``: (…, H, W) float foreground probability and int32 {0, 1}.
    """
    _check_config(config)
    query_feats = jnp.asarray(query_feats)
    image_size = tuple(int(s) for s in image_size)
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"image_size must be (H, W) positive, got {image_size}")
    proto = jnp.asarray(classifier.prototype)
    batched = proto.ndim == 2
    if proto.ndim not in (1, 2) or query_feats.ndim != 3 + batched or \
            query_feats.shape[-1] != proto.shape[-1] or \
            (batched and query_feats.shape[0] != proto.shape[0]):
        raise ValueError(f"query_feats {query_feats.shape} does not match the "
                         f"classifier prototype {proto.shape} (expected "
                         f"{'(T, h, w, C)' if batched else '(h, w, C)'})")
    fn = _predict_batch_jit if batched else _predict_jit
    return fn(Classifier(proto, jnp.asarray(classifier.bias)), query_feats, image_size,
              config.temperature, config.normalize_features)


def oracle_pi(query_mask, feature_size: tuple[int, int], dtype=None) -> jax.Array:
    """True foreground proportion of the query on the feature grid (official
    ``compute_FB_param`` with ``FB_param_type='oracle'``).

    Arguments:
      query_mask: (…, H, W) int labels {0, 1, 255}.
      feature_size: ``(h, w)`` of the feature grid.
      dtype: float dtype of the result; ``None`` = the mask's dtype if it is a
        float, else JAX's default float (float64 under x64), so that an x64
        oracle run never mixes a float32 pi into float64 features.
    Returns:
      (…) foreground fraction among the valid (non-255) downsampled pixels.
    """
    m = jnp.asarray(query_mask)
    feature_size = _check_size("feature_size", feature_size)
    if m.ndim < 2:
        raise ValueError(f"query_mask must be (..., H, W), got {m.shape}")
    if dtype is None:
        dtype = m.dtype if jnp.issubdtype(m.dtype, jnp.floating) else float
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a float dtype, got {dtype}")
    ds = downsample_mask(m, tuple(feature_size)).astype(jnp.int32)
    valid = (ds != IGNORE).astype(dtype)
    fg = (ds == 1).astype(dtype)
    return jnp.sum(fg * valid, (-2, -1)) / jnp.sum(valid, (-2, -1))


def valid_mask(labels) -> jax.Array:
    """``labels != 255``."""
    return jnp.asarray(labels) != IGNORE
