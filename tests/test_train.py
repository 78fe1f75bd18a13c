"""Training core: measurements, seed vmapping, resume, checkpoints (kills and
SIGTERM: test_runs.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from digits_task import make_task
from gapjax import checkpoint as ckpt
from gapjax.train import (init_train_state, make_train_step, scan_train_steps,
                          train_and_evaluate,
                          train_step_fn)


def _quad_task():
    tx = optax.sgd(0.1)

    def loss_fn(p, c, b, k):
        return jnp.sum((p["w"] * b - 1.0) ** 2), (c, {})

    return loss_fn, tx


def test_step_measurements_match_independent_gradient():
    loss_fn, tx = _quad_task()
    st = init_train_state(jax.random.key(0), lambda k: {"params": {"w": jnp.full((3,), 2.0)}}, tx)
    batch = jnp.array([1.0, 2.0, 3.0])
    g = jax.grad(lambda p: loss_fn(p, {}, batch, None)[0])({"w": jnp.full((3,), 2.0)})["w"]
    new, m = make_train_step(loss_fn, tx, donate=False)(st, batch)
    # plain SGD: update = -lr * grad exactly, so the norms are tied (float32 rounding).
    np.testing.assert_allclose(m["grad_norm"], np.linalg.norm(g), rtol=1e-6)
    np.testing.assert_allclose(m["update_norm"], 0.1 * np.linalg.norm(g), rtol=1e-6)
    np.testing.assert_allclose(new.params["w"], 2.0 - 0.1 * g, rtol=1e-6)
    assert int(new.step) == 1


def test_vmapped_seeds_equal_separate_runs():
    task = make_task()
    keys = jax.random.split(jax.random.key(3), 3)
    states = jax.vmap(lambda k: init_train_state(k, task.init_fn, task.tx))(keys)
    vstep = make_train_step(task.loss_fn, task.tx, num_seeds=3, donate=False)
    single = jax.jit(train_step_fn(task.loss_fn, task.tx))
    batch = task.batch_fn(jax.random.key(0), 0)
    vnew, vm = vstep(states, batch)
    for i in range(3):
        s = init_train_state(keys[i], task.init_fn, task.tx)
        new, m = single(s, batch)
        for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(vnew.params)):
            np.testing.assert_allclose(a, b[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m["loss"], vm["loss"][i], rtol=1e-5)


def _cfg(**kw):
    return dict(dict(log_every=5, eval_every=10, checkpoint_every=10, progress=False,
                     num_devices=1), **kw)


def _params(state):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]


def test_resume_is_bitwise_identical(tmp_path):
    task = make_task()
    straight, _ = train_and_evaluate(task, _cfg(num_steps=40), tmp_path / "a")
    train_and_evaluate(task, _cfg(num_steps=20), tmp_path / "b")
    resumed, summary = train_and_evaluate(task, _cfg(num_steps=40, resume=True), tmp_path / "b")
    assert summary["step"] == 40
    for a, b in zip(_params(straight), _params(resumed)):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "a/metrics.jsonl").read_text() == (tmp_path / "b/metrics.jsonl").read_text()


def test_corrupt_latest_checkpoint_falls_back(tmp_path):
    task = make_task()
    straight, _ = train_and_evaluate(task, _cfg(num_steps=30), tmp_path / "a")
    train_and_evaluate(task, _cfg(num_steps=30), tmp_path / "b")
    cdir = tmp_path / "b/checkpoints"
    assert ckpt.all_steps(cdir) == [10, 20, 30]
    latest = cdir / "0000000030"
    victim = max((p for p in latest.rglob("*") if p.is_file() and p.name != ckpt.MANIFEST),
                 key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # truncate
    with pytest.raises(ckpt.CheckpointError, match=str(latest)):
        ckpt.restore(latest, straight)
    with pytest.warns(RuntimeWarning, match="0000000030"):
        _, step = ckpt.restore_latest(cdir, straight)
    assert step == 20
    with pytest.warns(RuntimeWarning):
        resumed, _ = train_and_evaluate(task, _cfg(num_steps=30, resume=True), tmp_path / "b")
    for a, b in zip(_params(straight), _params(resumed)):
        np.testing.assert_array_equal(a, b)
    # the corrupt folder was set aside (renamed), not deleted or overwritten in place
    assert any(p.name.startswith("0000000030.unusable") for p in cdir.iterdir())


def test_incomplete_checkpoint_is_reported(tmp_path):
    state = {"step": jnp.zeros((), jnp.int32), "w": jnp.ones(3)}
    path = ckpt.save(tmp_path / "c", state, step=5)
    (path / ckpt.MANIFEST).unlink()  # as if the process died before finishing
    with pytest.raises(ckpt.CheckpointError, match="incomplete"):
        ckpt.restore(path, state)
    assert ckpt.restore_latest(tmp_path / "empty", state) == (None, None)


def test_save_never_overwrites_a_good_checkpoint(tmp_path):
    a = {"w": jnp.ones(3)}
    path = ckpt.save(tmp_path, a, step=1)
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    ckpt.save(tmp_path, {"w": jnp.zeros(3)}, step=1)
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    np.testing.assert_array_equal(ckpt.restore(path, a)["w"], 1.0)


def test_keep_k_prunes_oldest(tmp_path):
    for s in range(1, 6):
        ckpt.save(tmp_path, {"w": jnp.full(2, float(s))}, step=s, keep=2)
    assert ckpt.all_steps(tmp_path) == [4, 5]
    with pytest.raises(ValueError, match="keep"):
        ckpt.save(tmp_path, {"w": jnp.ones(2)}, step=9, keep=0)


def test_missing_workdir_parent_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="workdir parent"):
        train_and_evaluate(make_task(), _cfg(num_steps=1), tmp_path / "no" / "run")


def test_train_and_evaluate_with_vmapped_seeds_matches_single_seed_runs(tmp_path):
    task = make_task()
    _, summ = train_and_evaluate(task, _cfg(num_steps=10, num_seeds=2), tmp_path / "v")
    assert len(summ["train"]["loss"]) == 2 and len(summ["eval"]["acc"]) == 2
    state, _ = train_and_evaluate(task, _cfg(num_steps=10, num_seeds=2), tmp_path / "w")
    # seed i of the stacked run is init_train_state(split(init_key, 2)[i]):
    init_key = jax.random.split(jax.random.key(0))[0]
    keys = jax.random.split(init_key, 2)
    single = jax.jit(train_step_fn(task.loss_fn, task.tx))
    dkey = jax.random.split(jax.random.key(0))[1]
    for i in range(2):
        s = init_train_state(keys[i], task.init_fn, task.tx)
        for t in range(10):
            s, _ = single(s, task.batch_fn(dkey, t))
        for a, b in zip(jax.tree.leaves(s.params), jax.tree.leaves(state.params)):
            np.testing.assert_allclose(a, np.asarray(b)[i], rtol=1e-5, atol=1e-6)


def test_scan_train_steps_equals_a_python_loop_of_steps():
    task = make_task()
    st0 = init_train_state(jax.random.key(5), task.init_fn, task.tx)
    dkey = jax.random.key(2)
    scanned, m = jax.jit(lambda s: scan_train_steps(
        task.loss_fn, task.tx, s, lambda t: task.batch_fn(dkey, t), 5))(st0)
    step = jax.jit(train_step_fn(task.loss_fn, task.tx))
    s = init_train_state(jax.random.key(5), task.init_fn, task.tx)
    for t in range(5):
        s, mt = step(s, task.batch_fn(dkey, t))
    assert m["loss"].shape == (5,) and int(scanned.step) == 5
    np.testing.assert_allclose(m["loss"][-1], mt["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s.params), jax.tree.leaves(scanned.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_step_without_norms_gives_the_same_state():
    # norms=False drops only the three global norms (for non-logging steps): the
    # update is the same computation, so the new state is bitwise equal.
    task = make_task()
    st = init_train_state(jax.random.key(5), task.init_fn, task.tx)
    batch = task.batch_fn(jax.random.key(2), 0)
    with_n, m = make_train_step(task.loss_fn, task.tx, donate=False)(st, batch)
    without, m0 = make_train_step(task.loss_fn, task.tx, donate=False, norms=False)(st, batch)
    assert set(m) - set(m0) == {"grad_norm", "param_norm", "update_norm"}
    assert float(m0["loss"]) == float(m["loss"])
    for a, b in zip(jax.tree.leaves(with_n), jax.tree.leaves(without)):
        np.testing.assert_array_equal(a, b)
    # norms="grad" keeps only grad_norm (the loop's unlogged steps), same state
    grad_only, mg = make_train_step(task.loss_fn, task.tx, donate=False, norms="grad")(st, batch)
    assert set(m) - set(mg) == {"param_norm", "update_norm"}
    assert float(mg["grad_norm"]) == float(m["grad_norm"])
    for a, b in zip(jax.tree.leaves(with_n), jax.tree.leaves(grad_only)):
        np.testing.assert_array_equal(a, b)
    _, ms = jax.jit(lambda s: scan_train_steps(task.loss_fn, task.tx, s,
                                               lambda t: batch, 2, norms=False))(st)
    assert "grad_norm" not in ms and ms["loss"].shape == (2,)
    with pytest.raises(TypeError, match="norms"):
        train_step_fn(task.loss_fn, task.tx, norms="no")
