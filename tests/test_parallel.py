"""Sharding: 1 vs 8 faked devices, and two processes with jax.distributed."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from digits_task import make_task
from gapjax import parallel
from gapjax.train import init_train_state, make_train_step

HERE = pathlib.Path(__file__).parent


def _run(num_devices, steps=20):
    task = make_task()
    mesh = parallel.make_mesh(num_devices)
    state = parallel.replicate(init_train_state(jax.random.key(0), task.init_fn, task.tx), mesh)
    step = make_train_step(task.loss_fn, task.tx, mesh=mesh)
    dkey = jax.random.key(1)
    for s in range(steps):
        state, m = step(state, parallel.shard_batch(task.batch_fn(dkey, s), mesh))
        jax.block_until_ready(m)  # one program in flight (see gapjax.train._loop)
    return state, m


def test_eight_devices_equal_one():
    assert jax.device_count() == 8
    s1, _ = _run(1)
    s8, m8 = _run(8)
    # the batch really is split over 8 devices and the params replicated
    assert len(s8.params["Dense_0"]["kernel"].sharding.device_set) == 8
    assert s8.params["Dense_0"]["kernel"].sharding.is_fully_replicated
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
        # only the summation order of the batch reductions differs
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(s1.collections), jax.tree.leaves(s8.collections)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_shard_batch_rejects_indivisible_batch():
    mesh = parallel.make_mesh(8)
    with pytest.raises(ValueError, match="divisible"):
        parallel.shard_batch(np.zeros((12, 3)), mesh)
    with pytest.raises(ValueError, match="num_devices"):
        parallel.make_mesh(9)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_single_process(tmp_path):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(HERE), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    procs = [subprocess.Popen([sys.executable, str(HERE / "digits_task.py"), "--distributed",
                               str(port), str(i), "2", str(tmp_path / f"p{i}.npz")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode()[-3000:]
    ref, _ = _run(1)
    ref_leaves = [np.asarray(x) for x in jax.tree.leaves(ref.params)]
    got = [np.load(tmp_path / f"p{i}.npz") for i in range(2)]
    for i, leaf in enumerate(ref_leaves):
        a, b = got[0][f"arr_{i}"], got[1][f"arr_{i}"]
        np.testing.assert_array_equal(a, b)  # replicas identical across processes
        np.testing.assert_allclose(a, leaf, rtol=1e-5, atol=1e-6)
