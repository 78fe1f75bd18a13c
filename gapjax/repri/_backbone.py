"""Small conv backbone and its base training task (per-pixel cross-entropy on
background + base classes), driven by the shared training core."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gapjax._checks import as_float_array, check_int, check_labels
from gapjax.repri._inference import IGNORE, upsample_bilinear
from gapjax.repri._scenes import SceneConfig, base_scene, digit_bank


class SegNet(nn.Module):
    """Conv feature extractor (stride 2) + 1x1 classifier.

    ``features(x)``: (B, S, S, 3) -> (B, S/2, S/2, widths[-1]) non-negative
    (post-ReLU, like PSPNet's bottleneck that RePRI reads); ``__call__`` gives
    class logits upsampled bilinearly (``align_corners=True``) to (B, S, S, n).
    """

    num_classes: int
    widths: Sequence[int] = (32, 48, 48, 64)
    groups: int = 8          # GroupNorm groups after every conv (0 = none)

    def setup(self):
        check_int("num_classes", self.num_classes, min=1)
        if len(self.widths) != 4 or any(int(c) < 1 for c in self.widths):
            raise ValueError(f"widths must be four channel counts >= 1, got {self.widths}")
        w = self.widths
        self.convs = [nn.Conv(w[0], (3, 3)),
                      nn.Conv(w[1], (3, 3), strides=(2, 2)),
                      nn.Conv(w[2], (3, 3), kernel_dilation=(2, 2)),
                      nn.Conv(w[3], (3, 3), kernel_dilation=(3, 3))]
        self.norms = [nn.GroupNorm(num_groups=self.groups) if self.groups else None
                      for _ in w]
        self.head = nn.Conv(self.num_classes, (1, 1))

    def features(self, x):
        for conv, norm in zip(self.convs, self.norms):
            x = conv(x)
            x = nn.relu(norm(x) if norm is not None else x)
        return x

    def __call__(self, x):
        f = self.features(x)
        logits = self.head(f)                                   # (B, h, w, n)
        up = upsample_bilinear(jnp.moveaxis(logits, -1, -3), x.shape[1:3])
        return jnp.moveaxis(up, -3, -1)


def pixel_cross_entropy(logits, labels):
    """Mean CE over non-255 pixels. logits (B, H, W, n), labels (B, H, W) in
    ``[0, n)`` or 255 (range-checked when concrete)."""
    logits = as_float_array("logits", logits, min_ndim=2)
    check_labels("labels", labels, logits.shape[-1], ignore=(IGNORE,))
    if jnp.shape(labels) != logits.shape[:-1]:
        raise ValueError(f"labels must have shape {logits.shape[:-1]} (logits without the "
                         f"class axis), got {jnp.shape(labels)}")
    valid = labels != IGNORE
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.where(valid, labels, 0))
    return jnp.sum(ce * valid) / jnp.maximum(jnp.sum(valid), 1)


def base_training_parts(base_classes, cfg: SceneConfig, batch_size: int,
                        widths=(32, 48, 48, 64), groups: int = 8):
    """Model, ``init_fn``, ``loss_fn`` and ``batch_fn`` of the base training.

    ``batch_fn(key, step)`` is pure (scenes from ``fold_in(key, step)``) so a
    resumed run sees the same batches. Returns ``(model, init_fn, loss_fn,
    batch_fn, eval_batch_fn, eval_fn)``; ``eval_batch_fn`` draws held-out
    scenes from the digits' test split; ``eval_fn`` gives pixel accuracy and
    base mIoU.
    """
    model = SegNet(num_classes=1 + len(base_classes), widths=tuple(widths), groups=groups)
    bank = digit_bank("train", cfg.digit_size)
    test_bank = digit_bank("test", cfg.digit_size)
    base = tuple(base_classes)

    def init_fn(key):
        return model.init(key, jnp.zeros((1, cfg.canvas, cfg.canvas, 3)))

    def loss_fn(params, collections, batch, key):
        logits = model.apply({"params": params}, batch["image"])
        loss = pixel_cross_entropy(logits, batch["labels"])
        return loss, (collections, {})

    def _batch(b, key, step):
        keys = jax.random.split(jax.random.fold_in(key, step), batch_size)
        img, lab = jax.vmap(lambda k: base_scene(k, b, base, cfg))(keys)
        return {"image": img, "labels": lab}

    def batch_fn(key, step):
        return _batch(bank, key, step)

    def eval_batch_fn(key, step):
        return _batch(test_bank, key, step)

    def eval_fn(params, collections, batch):
        logits = model.apply({"params": params}, batch["image"])
        pred = jnp.argmax(logits, -1)
        lab = batch["labels"]
        valid = lab != IGNORE
        n = 1 + len(base)
        p = jax.nn.one_hot(pred, n) * valid[..., None]
        t = jax.nn.one_hot(jnp.where(valid, lab, 0), n) * valid[..., None]
        inter = jnp.sum(p * t, (0, 1, 2))
        union = jnp.sum(p, (0, 1, 2)) + jnp.sum(t, (0, 1, 2)) - inter
        return {"loss": pixel_cross_entropy(logits, lab),
                "pixel_acc": jnp.sum(inter) / jnp.sum(valid),
                "base_miou": jnp.mean(inter / jnp.maximum(union, 1.0))}

    return model, init_fn, loss_fn, batch_fn, eval_batch_fn, eval_fn


def extract_features(model: SegNet, params, images, chunk: int = 256):
    """Backbone features of (N, S, S, 3) images in jitted chunks -> (N, h, w, C)."""
    fn = jax.jit(lambda p, x: model.apply({"params": p}, x, method=SegNet.features))
    out = [fn(params, images[i:i + chunk]) for i in range(0, images.shape[0], chunk)]
    return jnp.concatenate(out, 0)
