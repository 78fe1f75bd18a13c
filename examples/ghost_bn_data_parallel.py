"""Ghost Batch Norm in your own Flax model, trained data-parallel on 8 (faked) devices.

Replace ``nn.BatchNorm`` by :class:`gapjax.ghost_bn.GhostBatchNorm` (same
variables, same call), shard the large batch on a ``("data",)`` mesh and keep
the state replicated: each device holds whole ghost batches, so the per-ghost
statistics never cross devices. The learning rate follows the paper's
``sqrt(B_L / B_S)`` rule (:func:`gapjax.ghost_bn.scale_lr`).

    python examples/ghost_bn_data_parallel.py --steps 300
"""

import argparse
import os

# Fake 8 CPU devices; must happen before jax is imported.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from gapjax import data, ghost_bn, parallel, train  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--steps", type=int, default=300, help="updates")
ap.add_argument("--batch", type=int, default=512, help="large batch B_L")
ap.add_argument("--ghost", type=int, default=32, help="ghost batch B_S")
ap.add_argument("--min_accuracy", type=float, default=0.9, help="asserted test accuracy")
args = ap.parse_args()


class MyConvNet(nn.Module):
    """The user's model: a small CNN whose BatchNorm became GhostBatchNorm."""
    ghost_batch_size: int | None

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = x[..., None]                                      # (N, 8, 8, 1)
        for width in (16, 32):
            x = nn.Conv(width, (3, 3))(x)
            x = ghost_bn.GhostBatchNorm(self.ghost_batch_size, momentum=0.9,
                                        use_running_average=not train)(x)
            x = nn.relu(x)
        return nn.Dense(10)(x.mean(axis=(1, 2)))


train_split, test_split = data.load_digits()
model = MyConvNet(ghost_batch_size=args.ghost)
small = ghost_bn.Regime(batch_size=args.ghost, epochs=1.0, lr=((0, 0.05),))
tx = optax.sgd(ghost_bn.scale_lr(small, args.batch).lr[0][1], momentum=0.9)


def loss_fn(params, collections, batch, key):
    logits, new = model.apply({"params": params, **collections}, batch["x"],
                              mutable=["batch_stats"])
    return ghost_bn.cross_entropy(logits, batch["y"]), (new, {})


mesh = parallel.make_mesh()                       # all 8 devices on the "data" axis
state = parallel.replicate(train.init_train_state(
    jax.random.key(0), lambda k: model.init(k, jnp.zeros((args.ghost, 8, 8))), tx), mesh)
step = train.make_train_step(loss_fn, tx, mesh=mesh)
arrays = {"x": train_split.x, "y": train_split.y}
for t in range(args.steps):
    batch = jax.device_get(data.batch_at(jax.random.key(1), t, arrays, args.batch))
    state, metrics = step(state, parallel.shard_batch(batch, mesh))
    jax.block_until_ready(metrics)   # one step in flight (faked-device pitfall)
print(f"{mesh.size} devices, batch {args.batch} = {args.batch // args.ghost} ghost "
      f"batches of {args.ghost}; final train loss {float(metrics['loss']):.3f}")

logits = model.apply({"params": state.params, **state.collections}, test_split.x,
                     train=False)
accuracy = float(jnp.mean(jnp.argmax(logits, -1) == test_split.y))
print(f"test accuracy with the running statistics: {accuracy:.3f}")
assert accuracy >= args.min_accuracy, accuracy
