"""A small digits MLP-with-BatchNorm task used by the foundation tests.

Also a script: ``python tests/digits_task.py WORKDIR NUM_STEPS [key=value ...]``
runs :func:`gapjax.train.train_and_evaluate` on it (used by the kill tests;
exit status 75 when preempted),
and ``python tests/digits_task.py --distributed PORT PID NPROC OUT`` runs the
data-parallel steps in one of several processes (the multi-process test).
"""

import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gapjax.data import batch_at, load_digits
from gapjax.train import Task


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(32)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x)
        return nn.Dense(10)(x)


def make_task(batch_size=64, lr=0.05):
    train, test = load_digits(flat=True)
    model = MLP()
    tx = optax.chain(optax.clip_by_global_norm(5.0), optax.sgd(lr, momentum=0.9))
    arrays = (jnp.asarray(train.x), jnp.asarray(train.y))

    def loss_fn(params, coll, batch, key):
        x, y = batch
        logits, new = model.apply({"params": params, **coll}, x, mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, (new, {"acc": jnp.mean(jnp.argmax(logits, -1) == y)})

    def eval_fn(params, coll, batch):
        x, y = batch
        logits = model.apply({"params": params, **coll}, x, train=False)
        return {"acc": jnp.mean(jnp.argmax(logits, -1) == y)}

    n = (len(test.x) // 8) * 8
    return Task(init_fn=lambda k: model.init(k, jnp.zeros((2, 64))), loss_fn=loss_fn,
                tx=tx, batch_fn=lambda key, step: batch_at(key, step, arrays, batch_size),
                eval_fn=eval_fn, eval_batches=lambda: [(test.x[:n], test.y[:n])])


def _distributed(port, pid, nproc, out):
    from gapjax import parallel
    from gapjax.train import init_train_state, make_train_step

    parallel.initialize_distributed(f"127.0.0.1:{port}", int(nproc), int(pid))
    task = make_task()
    mesh = parallel.make_mesh()
    state = parallel.replicate(init_train_state(jax.random.key(0), task.init_fn, task.tx), mesh)
    step = make_train_step(task.loss_fn, task.tx, mesh=mesh)
    dkey = jax.random.key(1)
    for s in range(20):
        batch = jax.device_get(task.batch_fn(dkey, s))
        state, _ = step(state, parallel.shard_batch(batch, mesh))
    leaves = [np.asarray(jax.device_get(x.addressable_data(0)))
              for x in jax.tree.leaves(state.params)]
    np.savez(out, *leaves)
    jax.distributed.shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "--distributed":
        _distributed(*sys.argv[2:6])
    else:
        from gapjax.train import Preempted, train_and_evaluate

        cfg = dict(num_steps=int(sys.argv[2]), log_every=1, checkpoint_every=0,
                   progress=False, num_devices=1)
        for kv in sys.argv[3:]:
            k, v = kv.split("=")
            cfg[k] = {"True": True, "False": False}.get(v, v if not v.isdigit() else int(v))
        try:
            train_and_evaluate(make_task(), cfg, sys.argv[1])
        except Preempted as e:  # as python -m gapjax.run does
            print(e, flush=True)
            sys.exit(75)
        print("exited normally", flush=True)
