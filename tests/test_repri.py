"""RePRI inference: the spec's checks, gradients, a float64 NumPy reference,
metrics, resampling and input validation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gapjax import repri as R


def _task(key, K=2, h=6, w=6, C=8, H=12, W=12, dtype=jnp.float32, ignore=True):
    """Random task with features correlated with the foreground mask."""
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    sm = (jax.random.uniform(k1, (K, H, W)) < 0.35).astype(jnp.int32)
    qm = (jax.random.uniform(k2, (H, W)) < 0.3).astype(jnp.int32)
    if ignore:
        sm = jnp.where(jax.random.uniform(k3, (K, H, W)) < 0.15, 255, sm)
        qm = jnp.where(jax.random.uniform(k4, (H, W)) < 0.15, 255, qm)
    dsm = R.downsample_mask(sm, (h, w))
    dqm = R.downsample_mask(qm, (h, w))
    d = jax.random.normal(k5, (C,), dtype)
    ks = jax.random.split(k5, 2)
    fs = jax.random.normal(ks[0], (K, h, w, C), dtype) + 1.5 * (dsm == 1)[..., None] * d[None, None, None]
    fq = jax.random.normal(ks[1], (h, w, C), dtype) + 1.5 * (dqm == 1)[..., None] * d[None, None]
    # The support must hold a foreground pixel on the grid.
    sm = sm.at[:, 0, 0].set(1)
    return fs, sm, fq, qm


# --------------------------------------------------------------------------
# The spec's list.

def test_kl_only_drives_foreground_proportion_to_pi(getkey):
    fs, sm, fq, qm = _task(getkey(), K=1)
    # KL-only, fixed pi, the official lr; the KL gradient vanishes as phat -> pi,
    # so the approach is slow: 1000 updates (the oracle's 299 reach ~0.03).
    cfg = R.RePRIConfig(lambda_ce=0.0, lambda_kl=1.0, lambda_h=0.0, num_updates=1000)
    for pi in (0.1, 0.3, 0.7):
        out = R.repri(fs, sm, fq, R.valid_mask(qm), pi=pi, config=cfg)
        phat = float(out.history["marginal_fg"][-1])
        assert abs(phat - pi) < 0.02, (pi, phat)          # the spec's tolerance
        gap = np.abs(np.asarray(out.history["marginal_fg"]) - pi)
        assert np.all(np.diff(gap) <= 1e-6)               # monotone approach
        assert float(out.pi[1]) == pytest.approx(pi)      # fixed: never re-estimated


@pytest.mark.parametrize("K", [1, 5])
def test_pi_updated_once_after_ninth_update(getkey, K):
    fs, sm, fq, qm = _task(getkey(), K=K)
    qv = R.valid_mask(qm)
    out = R.repri(fs, sm, fq, qv)
    pi_h = np.asarray(out.history["pi_fg"])
    lam = np.asarray(out.history["lambda_kl"])
    assert pi_h.shape == (49,)                            # range(1, 50)
    # Updates 1..9 (history entries 0..8) use the initial pi and lambda_KL = 1/K;
    # updates 10..49 the re-estimated pi and lambda_KL = 1/K + 1.
    assert np.all(pi_h[:9] == pi_h[0]) and np.all(pi_h[9:] == pi_h[9])
    assert pi_h[9] != pi_h[0]
    np.testing.assert_allclose(lam[:9], 1.0 / K, rtol=1e-6)
    np.testing.assert_allclose(lam[9:], 1.0 / K + 1.0, rtol=1e-6)
    assert float(out.lambda_kl) == pytest.approx(1.0 / K + 1.0)
    # The initial pi is the initial classifier's mean p_fg over valid pixels ...
    zero = R.repri(fs, sm, fq, qv, config=dataclasses.replace(R.REPRI, num_updates=0))
    assert pi_h[0] == pytest.approx(float(zero.pi[1]), rel=1e-6)
    # ... and the new one the classifier's after exactly 9 updates.
    nine = R.repri(fs, sm, fq, qv, config=dataclasses.replace(R.REPRI, num_updates=9))
    fqn = R.l2_normalize(fq)
    want = R.estimate_pi(nine.classifier, fqn, R.downsample_mask(qv, fq.shape[:2]), 20.0)
    assert pi_h[9] == pytest.approx(float(want[1]), rel=1e-5)   # float32 round-off


def test_no_pi_update_without_kl_and_with_oracle(getkey):
    fs, sm, fq, qm = _task(getkey())
    qv = R.valid_mask(qm)
    out = R.repri(fs, sm, fq, qv, config=R.CE_H)         # lambda_KL = 0: official skip
    assert np.all(np.asarray(out.history["pi_fg"]) == float(out.history["pi_fg"][0]))
    assert np.all(np.asarray(out.history["lambda_kl"]) == 0.0)
    pi = R.oracle_pi(qm, fq.shape[:2])
    o = R.repri(fs, sm, fq, qv, pi=pi, config=R.ORACLE)
    assert o.history["loss"].shape == (299,)
    np.testing.assert_allclose(o.history["pi_fg"], float(pi), rtol=1e-6)
    np.testing.assert_allclose(o.history["lambda_kl"], 1.0)


def test_support_ignore_pixels_have_no_effect(getkey):
    fs, sm, fq, qm = _task(getkey(), K=3)
    h, w = fs.shape[1:3]
    ign = R.downsample_mask(sm, (h, w)) == 255
    assert bool(ign.any())
    noise = 10.0 * jax.random.normal(getkey(), fs.shape)
    fs2 = jnp.where(ign[..., None], fs + noise, fs)
    a = R.repri(fs, sm, fq, R.valid_mask(qm))
    b = R.repri(fs2, sm, fq, R.valid_mask(qm))
    # Ignored pixels enter only multiplied by exact zeros: bitwise equal.
    np.testing.assert_array_equal(a.classifier.prototype, b.classifier.prototype)
    np.testing.assert_array_equal(a.classifier.bias, b.classifier.bias)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])


def test_query_ignore_pixels_move_initial_bias_but_not_the_loss(getkey):
    fs, sm, fq, qm = _task(getkey())
    h, w = fq.shape[:2]
    qv = R.valid_mask(qm)
    ign = ~R.downsample_mask(qv, (h, w))
    assert bool(ign.any())
    fq2 = jnp.where(ign[..., None], fq + 5.0 * jax.random.normal(getkey(), fq.shape), fq)
    a = R.repri(fs, sm, fq, qv, config=R.PROTOTYPE)
    b = R.repri(fs, sm, fq2, qv, config=R.PROTOTYPE)
    np.testing.assert_array_equal(a.classifier.prototype, b.classifier.prototype)
    assert abs(float(a.classifier.bias) - float(b.classifier.bias)) > 1e-3
    # For a fixed classifier, H and KL only see valid query pixels.
    pi = jnp.array([0.7, 0.3])
    lab = (R.downsample_mask(sm, (h, w)) == 1).astype(jnp.int32)
    sv = R.downsample_mask(sm, (h, w)) != 255
    ta = R.loss_terms(a.classifier, fs, lab, sv, fq, ~ign, pi, 20.0)
    tb = R.loss_terms(a.classifier, fs, lab, sv, fq2, ~ign, pi, 20.0)
    for k in ("kl", "h", "marginal"):
        np.testing.assert_array_equal(ta[k], tb[k])


def test_vmapped_equals_loop(getkey, x64):
    T, K = 4, 2
    tasks = [_task(getkey(), K=K, dtype=jnp.float64) for _ in range(T)]
    stack = [jnp.stack([t[i] for t in tasks]) for i in range(4)]
    qv = R.valid_mask(stack[3])
    out = R.repri_batch(stack[0], stack[1], stack[2], qv)
    for i, (fs, sm, fq, qm) in enumerate(tasks):
        o = R.repri(fs, sm, fq, R.valid_mask(qm))
        # float64: only reduction-order round-off separates the two programs.
        np.testing.assert_allclose(out.classifier.prototype[i], o.classifier.prototype,
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out.classifier.bias[i], o.classifier.bias, rtol=1e-10)
        np.testing.assert_allclose(out.history["loss"][i], o.history["loss"], rtol=1e-10)
    # The oracle path with a per-task pi too.
    pis = R.oracle_pi(stack[3], stack[0].shape[2:4])
    ob = R.repri_batch(stack[0], stack[1], stack[2], qv, pi=pis,
                       config=dataclasses.replace(R.ORACLE, num_updates=20))
    o1 = R.repri(tasks[2][0], tasks[2][1], tasks[2][2], R.valid_mask(tasks[2][3]),
                 pi=pis[2], config=dataclasses.replace(R.ORACLE, num_updates=20))
    np.testing.assert_allclose(ob.classifier.prototype[2], o1.classifier.prototype,
                               rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------
# Gradients and an independent float64 NumPy reference of the official code.

def _np_reference(fs, sm, fq, qv, pi_fg=None, K=None, iters=49, lr=0.025, tau=20.0,
                  weights=None, update_at=10):
    """Float64 NumPy transcription of the official classifier, with gradients
    by central finite differences (independent of JAX autodiff)."""
    fs, fq = np.asarray(fs, np.float64), np.asarray(fq, np.float64)
    fs = fs / np.maximum(np.linalg.norm(fs, axis=-1, keepdims=True), 1e-12)
    fq = fq / np.maximum(np.linalg.norm(fq, axis=-1, keepdims=True), 1e-12)
    h, w = fq.shape[:2]
    sm, qv = np.asarray(sm), np.asarray(qv)

    def ds(m):  # F.interpolate nearest: floor(dst * in / out)
        hi = np.floor(np.arange(h) * (m.shape[-2] / h)).astype(int)
        wi = np.floor(np.arange(w) * (m.shape[-1] / w)).astype(int)
        return m[..., hi, :][..., wi]

    dsm, dqv = ds(sm), ds(qv).astype(np.float64)
    fg = (dsm == 1).astype(np.float64)
    vs = (dsm != 255).astype(np.float64)
    K = fs.shape[0]
    proto = np.einsum("khw,khwc->c", fg, fs) / (fg.sum() + 1e-10)

    def logits(f, p):
        return tau * (f @ p) / (np.linalg.norm(f, axis=-1) * np.linalg.norm(p) + 1e-10)

    bias = logits(fq, proto).mean()

    def probs(f, p, b):
        pf = 1.0 / (1.0 + np.exp(-(logits(f, p) - b)))
        return np.stack([1 - pf, pf], -1)

    def est(p, b):
        pq = probs(fq, p, b)
        return (dqv[..., None] * pq).sum((0, 1)) / dqv.sum()

    l1, l2, l3 = weights if weights is not None else (1.0, 1.0 / K, 1.0 / K)
    pi = est(proto, bias) if pi_fg is None else np.array([1 - pi_fg, pi_fg])
    onehot = np.stack([1 - fg, fg], -1)

    def loss(theta, pi, l2):
        p, b = theta[:-1], theta[-1]
        ps, pq = probs(fs, p, b), probs(fq, p, b)
        ce = -(vs[..., None] * onehot * np.log(ps + 1e-10)).sum() / vs.sum()
        ent = -(dqv[..., None] * pq * np.log(pq + 1e-10)).sum() / dqv.sum()
        marg = (dqv[..., None] * pq).sum((0, 1)) / dqv.sum()
        kl = (marg * np.log(marg / (pi + 1e-10))).sum()
        return l1 * ce + l2 * kl + l3 * ent

    theta = np.concatenate([proto, [bias]])
    for it in range(1, iters + 1):
        g = np.zeros_like(theta)
        for j in range(theta.size):
            e = np.zeros_like(theta)
            e[j] = 1e-6
            g[j] = (loss(theta + e, pi, l2) - loss(theta - e, pi, l2)) / 2e-6
        theta = theta - lr * g
        if pi_fg is None and update_at is not None and it + 1 == update_at and l2 != 0:
            pi = est(theta[:-1], theta[-1])
            l2 = l2 + 1
    return theta[:-1], theta[-1], pi


def test_matches_float64_numpy_reference(getkey, x64):
    fs, sm, fq, qm = _task(getkey(), K=2, C=5, h=5, w=5, H=10, W=10, dtype=jnp.float64)
    qv = R.valid_mask(qm)
    cfg = dataclasses.replace(R.REPRI, num_updates=14)    # spans the pi update at 10
    out = R.repri(fs, sm, fq, qv, config=cfg)
    p, b, pi = _np_reference(fs, sm, fq, qv, iters=14)
    # Finite differences (h = 1e-6) carry ~1e-9 relative error per step.
    np.testing.assert_allclose(out.classifier.prototype, p, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(out.classifier.bias, b, rtol=1e-6)
    np.testing.assert_allclose(out.pi, pi, rtol=1e-6)


def _np_oracle_pi(mask, h, w):
    """Independent reference of the official ``compute_FB_param('oracle')``:
    PyTorch nearest downsampling (``floor(dst * float32(in / out))``) then the
    foreground share of the non-255 pixels, in float64 NumPy."""
    m = np.asarray(mask)
    H, W = m.shape[-2:]
    ri = np.floor(np.arange(h) * np.float32(H / h)).astype(int)
    ci = np.floor(np.arange(w) * np.float32(W / w)).astype(int)
    ds = m[..., ri, :][..., :, ci]
    valid = ds != 255
    return (ds == 1).sum((-2, -1)) / valid.sum((-2, -1)).astype(np.float64)


def test_oracle_pi_float64_matches_numpy_reference(getkey, x64):
    masks = jax.random.randint(getkey(), (7, 19, 13), 0, 2)
    masks = jnp.where(jax.random.uniform(getkey(), masks.shape) < 0.2, 255, masks)
    for h, w in ((19, 13), (6, 5), (4, 4)):
        pi = R.oracle_pi(masks, (h, w))
        assert pi.dtype == jnp.float64                    # was float32 under x64
        # Both sides divide the same integer counts in float64: only rounding
        # of one division separates them (<= 1 ulp ~ 1e-16).
        np.testing.assert_allclose(np.asarray(pi), _np_oracle_pi(masks, h, w),
                                   rtol=0, atol=1e-12)
    # The oracle classifier then runs in float64 end to end.
    fs, sm, fq, qm = _task(getkey(), K=1, dtype=jnp.float64)
    out = R.repri(fs, sm, fq, R.valid_mask(qm), pi=R.oracle_pi(qm, fq.shape[:2]),
                  config=R.ORACLE)
    assert out.pi.dtype == jnp.float64 and out.classifier.prototype.dtype == jnp.float64
    assert R.oracle_pi(masks.astype(jnp.float32), (6, 5)).dtype == jnp.float32


def test_gradient_matches_finite_differences(getkey, x64):
    fs, sm, fq, qm = _task(getkey(), K=3, dtype=jnp.float64)
    h, w = fq.shape[:2]
    fsn, fqn = R.l2_normalize(fs), R.l2_normalize(fq)
    dsm = R.downsample_mask(sm, (h, w))
    lab = (dsm == 1).astype(jnp.int32)
    sv, qv = dsm != 255, R.downsample_mask(R.valid_mask(qm), (h, w))
    clf = R.init_classifier(fsn, lab, fqn, 20.0)
    clf = R.Classifier(clf.prototype + 0.1 * jax.random.normal(getkey(), clf.prototype.shape),
                       clf.bias + 0.3)
    pi = jnp.array([0.6, 0.4])

    def f(theta):
        c = R.Classifier(theta[:-1], theta[-1])
        t = R.loss_terms(c, fsn, lab, sv, fqn, qv, pi, 20.0)
        return t["ce"] + 0.7 * t["kl"] + 0.3 * t["h"]

    f = jax.jit(f)
    theta = jnp.concatenate([clf.prototype, clf.bias[None]])
    g = jax.grad(f)(theta)
    eps = 1e-6
    fd = np.array([(f(theta.at[j].add(eps)) - f(theta.at[j].add(-eps))) / (2 * eps)
                   for j in range(theta.size)])
    # Central differences in float64: truncation O(eps^2) + round-off ~1e-10.
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_losses_summed_batch_size_independent(getkey):
    fs, sm, fq, qm = _task(getkey())
    qv = R.valid_mask(qm)
    one = R.repri_batch(fs[None], sm[None], fq[None], qv[None])
    other = _task(getkey())
    two = R.repri_batch(jnp.stack([fs, other[0]]), jnp.stack([sm, other[1]]),
                        jnp.stack([fq, other[2]]), jnp.stack([qv, R.valid_mask(other[3])]))
    # A task's update does not depend on its batch neighbours (summed losses);
    # float32 tolerance for possibly different vectorised reduction orders.
    np.testing.assert_allclose(one.classifier.prototype[0], two.classifier.prototype[0],
                               rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# Small constants, resampling, prediction.

def test_zero_features_give_zero_logit():
    f = jnp.zeros((3, 4))
    assert np.all(np.asarray(R.l2_normalize(f)) == 0)
    np.testing.assert_array_equal(R.cosine_logits(f, jnp.ones(4), 20.0), 0.0)


def test_nearest_indices_floor_based():
    np.testing.assert_array_equal(R.nearest_indices(32, 16), np.arange(16) * 2)
    np.testing.assert_array_equal(R.nearest_indices(5, 3), [0, 1, 3])   # floor(5/3 * i)
    np.testing.assert_array_equal(R.nearest_indices(4, 4), np.arange(4))
    np.testing.assert_array_equal(R.nearest_indices(3, 6), [0, 0, 1, 1, 2, 2])


def test_bilinear_align_corners_exact_on_linear_ramps():
    y, x = np.meshgrid(np.arange(4.0), np.arange(5.0), indexing="ij")
    z = jnp.asarray(2.0 * y - 3.0 * x + 1.0, jnp.float32)
    up = np.asarray(R.upsample_bilinear(z, (10, 13)))
    yy, xx = np.meshgrid(np.linspace(0, 3, 10), np.linspace(0, 4, 13), indexing="ij")
    # Bilinear interpolation reproduces affine functions; corners map to corners.
    np.testing.assert_allclose(up, 2.0 * yy - 3.0 * xx + 1.0, atol=1e-5)
    assert up[0, 0] == z[0, 0] and up[-1, -1] == z[-1, -1]


def test_prediction_ties_go_to_background():
    proto = jnp.array([1.0, 0.0])
    fq = jnp.tile(jnp.array([1.0, 0.0]), (2, 2, 1))
    clf = R.Classifier(proto, jnp.asarray(20.0))          # logit - b = 0 -> p = 0.5
    p, pred = R.predict(clf, fq, (4, 4))
    np.testing.assert_allclose(p, 0.5)
    assert int(pred.sum()) == 0
    _, pred2 = R.predict(R.Classifier(proto, jnp.asarray(19.9)), fq, (4, 4))
    assert int(pred2.sum()) == 16


# --------------------------------------------------------------------------
# Metrics.

def test_intersection_union_and_miou():
    target = np.array([[[1, 1, 0, 255]], [[0, 0, 1, 1]]])
    pred = np.array([[[1, 0, 0, 1]], [[1, 0, 1, 0]]])
    inter, union = R.intersection_union(pred, target)
    # Task 0: fg I=1 U=2, bg I=1 U=2 (the 255 pixel is excluded);
    # task 1: fg I=1 U=3, bg I=1 U=3.
    np.testing.assert_array_equal(inter, [[1, 1], [1, 1]])
    np.testing.assert_array_equal(union, [[2, 2], [3, 3]])
    s = R.accumulate_iou(R.init_iou_sums(4), inter, union, jnp.array([2, 2]))
    ciou = np.asarray(R.class_iou(s))
    assert ciou[2] == pytest.approx(2 / 5)                # summed over tasks, not averaged
    assert np.isnan(ciou[0]) and np.isnan(ciou[3])
    assert float(R.mean_iou(s)) == pytest.approx(2 / 5)
    s2 = R.accumulate_iou(s, inter[:1], union[:1], jnp.array([3]))
    assert float(R.mean_iou(s2)) == pytest.approx((2 / 5 + 1 / 2) / 2)
    # FB-IoU: bg I = 3, U = 7; fg I = 3, U = 7.
    assert float(R.fb_iou(s2)) == pytest.approx(3 / 7)


# --------------------------------------------------------------------------
# Bad input.

def test_bad_inputs_raise(getkey):
    fs, sm, fq, qm = _task(getkey(), K=2)
    qv = R.valid_mask(qm)
    with pytest.raises(ValueError, match="support_masks"):
        R.repri(fs, sm[:1], fq, qv)                       # K mismatch
    with pytest.raises(ValueError, match="query_feats"):
        R.repri(fs, sm, fq[..., :3], qv)                  # channel mismatch
    with pytest.raises(ValueError, match="smaller than the feature grid"):
        R.repri(fs, sm[:, :3, :3], fq, qv)
    with pytest.raises(ValueError, match="no foreground"):
        R.repri(fs, jnp.where(sm == 1, 0, sm), fq, qv)
    with pytest.raises(ValueError, match="K = 0"):
        R.repri(fs[:0], sm[:0], fq, qv)
    with pytest.raises(ValueError, match="labels 0"):
        R.repri(fs, sm.at[0, 0, 0].set(7), fq, qv)
    with pytest.raises(TypeError, match="support_masks"):
        R.repri(fs, sm.astype(jnp.float32), fq, qv)
    with pytest.raises(TypeError, match="support_feats"):
        R.repri(fs.astype(jnp.int32), sm, fq, qv)
    with pytest.raises(ValueError, match="NaN"):
        R.repri(fs.at[0, 0, 0, 0].set(jnp.nan), sm, fq, qv)
    with pytest.raises(ValueError, match="no valid pixel"):
        R.repri(fs, sm, fq, jnp.zeros_like(qv))
    with pytest.raises(ValueError, match="pi must lie"):
        R.repri(fs, sm, fq, qv, pi=1.5)
    with pytest.raises(ValueError, match="pi must have shape"):
        R.repri_batch(fs[None], sm[None], fq[None], qv[None], pi=jnp.ones(3) * 0.2)
    with pytest.raises(ValueError, match="tasks"):
        R.repri_batch(fs[None], sm[None], jnp.stack([fq, fq]), qv[None])
    with pytest.raises(ValueError, match=r"no foreground pixel .* in tasks \[1\]"):
        R.repri_batch(jnp.stack([fs, fs]), jnp.stack([sm, jnp.zeros_like(sm)]),
                      jnp.stack([fq, fq]), jnp.stack([qv, qv]))
    with pytest.raises(ValueError, match="num_updates"):
        R.RePRIConfig(num_updates=-1)
    with pytest.raises(ValueError, match="lr"):
        R.RePRIConfig(lr=0.0)
    with pytest.raises(ValueError, match="lambda_kl"):
        R.RePRIConfig(lambda_kl=-1.0)
    with pytest.raises(TypeError, match="RePRIConfig"):
        R.repri(fs, sm, fq, qv, config={"lr": 0.1})
