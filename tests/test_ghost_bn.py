"""GhostBatchNorm: equality with flax.linen.BatchNorm, the chunk loop, the EMA
closed form, the remainder rule, bad input, jit/grad/vmap and sharding."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gapjax.ghost_bn import BNMLP, GhostBatchNorm, ema_weights, num_ghost_batches

SHAPES = {"dense": (24, 5), "conv": (12, 3, 2, 4)}
GHOST = {"dense": 6, "conv": 3}


def _x(key, shape, dtype=jnp.float32):
    # Non-zero mean and non-unit scale so the statistics matter.
    return (1.5 * jax.random.normal(key, shape) + 0.7).astype(dtype)


def _perturbed(variables, key):
    """Non-trivial scale/bias and running stats (so every term is exercised)."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    p, s = variables["params"], variables["batch_stats"]
    return {"params": {"scale": 1 + 0.3 * jax.random.normal(k1, p["scale"].shape, p["scale"].dtype),
                       "bias": 0.2 * jax.random.normal(k2, p["bias"].shape, p["bias"].dtype)},
            "batch_stats": {"mean": 0.5 * jax.random.normal(k3, s["mean"].shape, s["mean"].dtype),
                            "var": 1 + jax.random.uniform(k4, s["var"].shape, s["var"].dtype)}}


def _loss_and_grads(module, variables, x, w):
    """Weighted-sum loss of the outputs, its grads w.r.t. params and x, new stats."""

    def f(params, x):
        y, st = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                             use_running_average=False, mutable=["batch_stats"])
        return jnp.sum(w * y), (y, st["batch_stats"])

    (_, (y, st)), (gp, gx) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(
        variables["params"], x)
    return y, st, gp, gx


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("ghost", [None, "N"])
def test_whole_batch_is_flax_batchnorm(kind, ghost, getkey):
    """B_S = B_L (or None): outputs, running stats and gradients of nn.BatchNorm."""
    shape = SHAPES[kind]
    x = _x(getkey(), shape)
    w = jax.random.normal(getkey(), shape)
    bn = nn.BatchNorm(momentum=0.9)
    gbn = GhostBatchNorm(ghost_batch_size=shape[0] if ghost == "N" else None, momentum=0.9)
    v = _perturbed(bn.init(getkey(), x, use_running_average=False), getkey())
    assert jax.tree.structure(v) == jax.tree.structure(
        gbn.init(getkey(), x, use_running_average=False))
    ref = jax.jit(functools.partial(_loss_and_grads, bn))(v, x, w)
    out = jax.jit(functools.partial(_loss_and_grads, gbn))(v, x, w)
    # Same operation sequence as Flax (G = 1 takes Flax's path); 1e-6 relative
    # only leaves room for float32 re-association by XLA fusion.
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # Inference mode is Flax's too.
    np.testing.assert_allclose(gbn.apply(v, x, use_running_average=True),
                               bn.apply(v, x, use_running_average=True), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("fast_variance", [True, False])
def test_ghosts_equal_sequential_batchnorm_on_chunks(kind, fast_variance, getkey, x64):
    """G ghost batches == G successive nn.BatchNorm calls on the contiguous chunks:
    outputs, running stats, and the loss gradient == the mean of the chunk
    gradients (the official code's gradient accumulation)."""
    shape, bs = SHAPES[kind], GHOST[kind]
    g = shape[0] // bs
    x = _x(getkey(), shape, jnp.float64)
    w = jax.random.normal(getkey(), shape, jnp.float64)
    bn = nn.BatchNorm(momentum=0.8, param_dtype=jnp.float64, use_fast_variance=fast_variance)
    gbn = GhostBatchNorm(ghost_batch_size=bs, momentum=0.8, param_dtype=jnp.float64,
                         use_fast_variance=fast_variance)
    v = _perturbed(bn.init(getkey(), x, use_running_average=False), getkey())
    v["batch_stats"] = jax.tree.map(lambda a: a.astype(jnp.float64), v["batch_stats"])
    y, st, gp, gx = jax.jit(functools.partial(_loss_and_grads, gbn))(v, x, w)

    stats, ys, gps, gxs = v["batch_stats"], [], [], []
    chunk_fn = jax.jit(functools.partial(_loss_and_grads, bn))
    for i in range(g):
        sl = slice(i * bs, (i + 1) * bs)
        yi, stats, gpi, gxi = chunk_fn({"params": v["params"], "batch_stats": stats},
                                       x[sl], w[sl])
        ys.append(yi), gps.append(gpi), gxs.append(gxi)
    # float64 throughout; 1e-10 covers summation-order differences.
    tol = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y, jnp.concatenate(ys), **tol)
    for k in ("mean", "var"):
        np.testing.assert_allclose(st[k], stats[k], **tol)
    gp_ref = jax.tree.map(lambda *a: sum(a), *gps)  # sum of chunk grads of sum-loss
    for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(gp_ref)):
        np.testing.assert_allclose(a, b, **tol)
    np.testing.assert_allclose(gx, jnp.concatenate(gxs), **tol)


@pytest.mark.parametrize("mode", ["sequential", "mean"])
def test_running_stats_closed_form_against_float64_loop(mode, getkey, x64):
    """r <- m^G r + sum_i (1-m) m^(G-1-i) s_i (or one update with the ghost mean),
    against an independent NumPy float64 loop over chunks."""
    n, c, bs, m = 42, 3, 6, 0.93
    x = np.asarray(_x(getkey(), (n, c), jnp.float64))
    r_mean = np.asarray(jax.random.normal(getkey(), (c,), jnp.float64))
    r_var = 1 + np.asarray(jax.random.uniform(getkey(), (c,), jnp.float64))
    gbn = GhostBatchNorm(ghost_batch_size=bs, momentum=m, running_stats=mode,
                         param_dtype=jnp.float64, use_running_average=False)
    v = gbn.init(getkey(), jnp.asarray(x))
    v = {"params": v["params"], "batch_stats": {"mean": jnp.asarray(r_mean),
                                                 "var": jnp.asarray(r_var)}}
    _, st = gbn.apply(v, jnp.asarray(x), mutable=["batch_stats"])

    chunks = x.reshape(n // bs, bs, c)
    mus = np.array([ch.mean(0) for ch in chunks])
    vs = np.array([((ch - ch.mean(0)) ** 2).mean(0) for ch in chunks])  # biased
    em, ev = r_mean.copy(), r_var.copy()
    if mode == "sequential":
        for mu, va in zip(mus, vs):
            em, ev = m * em + (1 - m) * mu, m * ev + (1 - m) * va
    else:
        em, ev = m * em + (1 - m) * mus.mean(0), m * ev + (1 - m) * vs.mean(0)
    # float64 end to end: agreement to roundoff.
    np.testing.assert_allclose(st["batch_stats"]["mean"], em, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(st["batch_stats"]["var"], ev, rtol=1e-12, atol=1e-12)

    decay, wts = ema_weights(7, m)
    assert abs(decay + wts.sum() - 1.0) < 1e-15  # an EMA: weights sum to one
    np.testing.assert_allclose(wts, [(1 - m) * m ** (6 - i) for i in range(7)], rtol=1e-15)


def test_inference_uses_running_stats_and_ignores_ghost_size(getkey):
    x = _x(getkey(), (8, 4))
    gbn = GhostBatchNorm(ghost_batch_size=2)
    v = _perturbed(gbn.init(getkey(), x, use_running_average=False), getkey())
    y = gbn.apply(v, x, use_running_average=True)
    p, s = v["params"], v["batch_stats"]
    ref = ((np.asarray(x) - np.asarray(s["mean"])[None]) / np.sqrt(np.asarray(s["var"])[None] + 1e-5)
           * np.asarray(p["scale"])[None] + np.asarray(p["bias"])[None])
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)  # float32 rsqrt vs sqrt
    # Inference works on any batch size (no ghost split), e.g. 3.
    assert gbn.apply(v, x[:3], use_running_average=True).shape == (3, 4)


def test_not_divisible_raises_clear_error(getkey):
    x = _x(getkey(), (10, 3))
    gbn = GhostBatchNorm(ghost_batch_size=4, use_running_average=False)
    with pytest.raises(ValueError, match=r"batch size 10.*ghost_batch_size=4"):
        gbn.init(getkey(), x)
    v = gbn.init(getkey(), x[:8])
    with pytest.raises(ValueError, match=r"ghost_batch_size=4"):
        jax.jit(lambda v, x: gbn.apply(v, x, mutable=["batch_stats"]))(v, x)
    with pytest.raises(ValueError, match="ghost_batch_size"):
        num_ghost_batches(10, 3)


@pytest.mark.parametrize("pad_to", [12, 16])
@pytest.mark.parametrize("mode", ["sequential", "mean"])
def test_mask_remainder_rule(pad_to, mode, getkey, x64):
    """Pad 10 examples to a multiple of B_S=4 and mask the padding: real rows are
    normalised with the stats of their chunk ([0:4], [4:8], [8:10]), running
    stats as the chunk loop (an all-padding ghost, pad_to=16, is skipped)."""
    n, bs, m = 10, 4, 0.9
    x = _x(getkey(), (n, 3), jnp.float64)
    xp = jnp.concatenate([x, 100.0 + jnp.zeros((pad_to - n, 3), x.dtype)])  # loud padding
    mask = (jnp.arange(pad_to) < n)[:, None]
    bn = nn.BatchNorm(momentum=m, param_dtype=jnp.float64, use_running_average=False)
    gbn = GhostBatchNorm(ghost_batch_size=bs, momentum=m, running_stats=mode,
                         param_dtype=jnp.float64, use_running_average=False)
    v = _perturbed(gbn.init(getkey(), x[:8]), getkey())
    v["batch_stats"] = jax.tree.map(lambda a: a.astype(jnp.float64), v["batch_stats"])

    def loss(params, xp):
        y, st = gbn.apply({"params": params, "batch_stats": v["batch_stats"]}, xp,
                          mask=mask, mutable=["batch_stats"])
        return jnp.sum(jnp.where(mask, y, 0.0) ** 2), (y, st["batch_stats"])

    (_, (y, st)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(v["params"], xp)
    ys, mus, vs = [], [], []
    stats = v["batch_stats"]
    bn_apply = jax.jit(lambda v, x: bn.apply(v, x, mutable=["batch_stats"]))
    for sl in (slice(0, 4), slice(4, 8), slice(8, 10)):
        yi, new = bn_apply({"params": v["params"], "batch_stats": stats}, x[sl])
        ys.append(yi)
        mus.append(x[sl].mean(0)), vs.append(x[sl].var(0))
        stats = new["batch_stats"] if mode == "sequential" else stats
    if mode == "mean":
        stats = {"mean": m * stats["mean"] + (1 - m) * sum(mus) / 3,
                 "var": m * stats["var"] + (1 - m) * sum(vs) / 3}
    tol = dict(rtol=1e-10, atol=1e-10)  # float64, summation order only
    np.testing.assert_allclose(y[:n], jnp.concatenate(ys), **tol)
    for k in ("mean", "var"):
        np.testing.assert_allclose(st[k], stats[k], **tol)
    assert bool(jnp.all(jnp.isfinite(y)))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_bad_input_raises(getkey):
    x = _x(getkey(), (8, 3))
    cases = [
        (GhostBatchNorm(ghost_batch_size=0), x, ValueError, "ghost_batch_size"),
        (GhostBatchNorm(ghost_batch_size=2.0), x, TypeError, "ghost_batch_size"),
        (GhostBatchNorm(momentum=1.0), x, ValueError, "momentum"),
        (GhostBatchNorm(epsilon=-1.0), x, ValueError, "epsilon"),
        (GhostBatchNorm(running_stats="ema"), x, ValueError, "running_stats"),
        (GhostBatchNorm(axis=0), x, ValueError, "axis"),
        (GhostBatchNorm(), x[:, 0], ValueError, "shape"),
        (GhostBatchNorm(), jnp.ones((8, 3), jnp.int32), TypeError, "floating"),
    ]
    for mod, xi, err, msg in cases:
        with pytest.raises(err, match=msg):
            mod.init(getkey(), xi, use_running_average=False)
    gbn = GhostBatchNorm(ghost_batch_size=2)
    with pytest.raises(ValueError, match="mask"):
        gbn.init(getkey(), x, use_running_average=False, mask=jnp.ones((4, 3), bool))


def test_jit_grad_vmap_over_seeds(getkey):
    """vmap over per-seed parameters == a Python loop; jit == eager."""
    x = _x(getkey(), (16, 6))
    model = BNMLP(features=(8, 8), ghost_batch_size=4)
    keys = jax.random.split(getkey(), 3)
    vs = jax.vmap(lambda k: model.init(k, x))(keys)

    def loss(params, stats):
        out, st = model.apply({"params": params, "batch_stats": stats}, x,
                              mutable=["batch_stats"])
        return jnp.mean(out ** 2), st

    f = jax.jit(jax.vmap(jax.value_and_grad(loss, has_aux=True)))
    (lv, stv), gv = f(vs["params"], vs["batch_stats"])
    f1 = jax.jit(jax.value_and_grad(loss, has_aux=True))
    for s in range(3):
        vi = jax.tree.map(lambda a: a[s], vs)
        (li, sti), gi = f1(vi["params"], vi["batch_stats"])
        # float32; vmapped vs unbatched kernels may re-associate sums.
        np.testing.assert_allclose(lv[s], li, rtol=1e-5)
        for a, b in zip(jax.tree.leaves((stv, gv)), jax.tree.leaves((sti, gi))):
            np.testing.assert_allclose(a[s], b, rtol=1e-4, atol=1e-6)


def test_sharded_equals_single_device_and_stays_local(getkey):
    """8 devices, batch sharded on its leading axis, G = 16 ghosts (2 per device):
    same train step as on one device; running stats identical on every replica;
    the forward pass has no cross-device collective (per-ghost stats are local)."""
    from gapjax.parallel import make_mesh, shard_batch
    from gapjax.train import init_train_state, make_train_step

    assert jax.device_count() == 8, "tests/conftest.py fakes 8 CPU devices"
    n, bs = 64, 4
    x = _x(getkey(), (n, 6))
    y = jax.random.randint(getkey(), (n,), 0, 3)
    model = BNMLP(features=(16,), num_classes=3, ghost_batch_size=bs)
    tx = optax.sgd(0.1, momentum=0.9)

    def loss_fn(params, coll, batch, key):
        logits, new = model.apply({"params": params, **coll}, batch["x"], mutable=["batch_stats"])
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, batch["y"][:, None], 1)), (new, {})

    init = lambda k: model.init(k, x[:bs])  # noqa: E731
    key = getkey()
    batch = {"x": x, "y": y}
    mesh = make_mesh(8)
    single = make_train_step(loss_fn, tx, donate=False)
    sharded = make_train_step(loss_fn, tx, mesh=mesh, donate=False)
    s1 = s8 = init_train_state(key, init, tx)
    for _ in range(2):
        s1, m1 = single(s1, batch)
        s8, m8 = sharded(s8, shard_batch(batch, mesh))
    # float32; cross-device sums of the gradient are re-associated.
    for a, b in zip(jax.tree.leaves((s1, m1)), jax.tree.leaves((s8, m8))):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    for leaf in jax.tree.leaves(s8.collections):
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        assert len(shards) == 8 and all(np.array_equal(shards[0], s) for s in shards)

    gbn = GhostBatchNorm(ghost_batch_size=bs, use_running_average=False)
    v = gbn.init(getkey(), x[:bs])
    fwd = jax.jit(lambda v, x: gbn.apply(v, x, mutable=["batch_stats"])[0])
    hlo = fwd.lower(v, shard_batch(x, mesh)).compile().as_text()
    for op in ("all-reduce", "all-gather", "all-to-all", "collective-permute"):
        assert op not in hlo, f"forward pass of GBN has a cross-device {op}"
    np.testing.assert_allclose(fwd(v, shard_batch(x, mesh)), fwd(v, x), rtol=1e-6, atol=1e-6)
