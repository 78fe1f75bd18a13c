"""RePRI transductive few-shot segmentation on features from *your* backbone.

:func:`gapjax.repri.repri_batch` takes arrays -- support features and masks,
query features and a valid mask -- and returns one classifier per task; any
frozen feature extractor will do. Here the "backbone" is a user's frozen conv
net (random weights, never trained on these scenes), and the tasks are
synthetic: a striped object of random size and place on a noisy background.
We compare the inductive prototype, CE-only fine-tuning and RePRI (paper Eq. 5).

    python examples/repri_your_backbone.py --tasks 200 --shots 1
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp

from gapjax import repri

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--tasks", type=int, default=200)
ap.add_argument("--shots", type=int, default=1)
ap.add_argument("--size", type=int, default=32, help="image side")
args = ap.parse_args()
S = args.size


def scene(key):
    """(S, S, 1) image and its {0, 1} mask: a striped rectangle on noise."""
    k_noise, k_box = jax.random.split(key)
    lo = jax.random.randint(k_box, (2,), 0, S // 2)
    hi = lo + jax.random.randint(jax.random.fold_in(k_box, 1), (2,), S // 4, S // 2)
    r, c = jnp.arange(S)[:, None], jnp.arange(S)[None, :]
    mask = ((r >= lo[0]) & (r < hi[0]) & (c >= lo[1]) & (c < hi[1])).astype(jnp.int32)
    stripes = jnp.sin(1.6 * (r + c))
    image = jnp.where(mask == 1, stripes, 0.0) + 0.5 * jax.random.normal(k_noise, (S, S))
    return image[..., None], mask


class Backbone(nn.Module):
    """The user's frozen feature extractor: (N, S, S, 1) -> (N, S/2, S/2, 32)."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(32, (5, 5))(x) ** 2                    # local texture energy
        x = jnp.log(nn.avg_pool(x, (2, 2), strides=(2, 2)) + 1e-3)
        return nn.LayerNorm(use_scale=False, use_bias=False)(x)


backbone = Backbone()
variables = backbone.init(jax.random.key(1), jnp.zeros((1, S, S, 1)))
features = jax.jit(lambda x: backbone.apply(variables, x))

keys = jax.random.split(jax.random.key(0), args.tasks * (args.shots + 1))
images, masks = jax.vmap(scene)(keys)                          # (T*(K+1), S, S, ...)
feats = features(images)
feats = feats.reshape((args.tasks, args.shots + 1) + feats.shape[1:])
masks = masks.reshape(args.tasks, args.shots + 1, S, S)
support_f, support_m = feats[:, :-1], masks[:, :-1]            # (T, K, h, w, C), (T, K, S, S)
query_f, query_m = feats[:, -1], masks[:, -1]                  # (T, h, w, C), (T, S, S)
query_valid = jnp.ones_like(query_m, bool)                     # no ignore pixels here

results = {}
for name, config in (("prototype", repri.PROTOTYPE), ("CE only", repri.CE_ONLY),
                     ("RePRI", repri.REPRI)):
    out = repri.repri_batch(support_f, support_m, query_f, query_valid, config=config)
    _, pred = repri.predict(out.classifier, query_f, (S, S), config=config)
    inter, union = repri.intersection_union(pred, query_m)
    sums = repri.accumulate_iou(repri.init_iou_sums(1), inter, union,
                                jnp.zeros(args.tasks, jnp.int32))
    results[name] = float(repri.mean_iou(sums))
    print(f"{name:>9}: foreground IoU {results[name]:.3f}, "
          f"FB-IoU {float(repri.fb_iou(sums)):.3f} over {args.tasks} {args.shots}-shot tasks")
assert results["RePRI"] > results["prototype"], results
print("transductive RePRI beats the inductive prototype on these features")
