"""Few-shot segmentation scenes composed from scikit-learn's bundled 8x8 digits.

A scene is a ``canvas x canvas`` RGB image cut into a ``grid x grid`` array of
cells; 2-3 cells hold a digit (upscaled bilinearly to ``digit_size``, random
colour, random offset inside its cell; with ``min_scale < 1`` each digit is
further shrunk about its centre by a factor uniform in ``[min_scale, 1]``, the
"widely varying object scale" variant) over a textured background (two random
sinusoidal gratings with random colours plus pixel noise). Per-pixel labels:
``0`` background, ``1 + digit`` on the object silhouette (stroke pixels with
intensity above ``fg_threshold``, dilated by ``dilate`` px), ``255`` (ignore)
on a ``dilate``-px band around it and on faint stroke pixels
(``intensity > ignore_threshold``) outside it, mirroring PASCAL's object
masks and void boundaries. Everything is a pure function of a PRNG key (jittable).

Folds (PASCAL-5i style): fold ``f`` has novel classes ``{2f, 2f+1}``, the other
8 digits are base classes. Base training scenes hold base digits only (the
official protocol excludes novel objects from training images) drawn from the
digits' train split; episodes draw digits from the test split, the target
class in a forced cell of every support and query image, the other cells any
digit class. Episode masks: 1 on the target class, 255 on ignore pixels, 0
elsewhere (other digits are background).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from gapjax._checks import check_int
from gapjax.data import load_digits

NUM_FOLDS = 5
NUM_DIGITS = 10


def fold_classes(fold: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(base, novel)`` digit classes of ``fold`` in ``[0, 5)``."""
    if not isinstance(fold, (int, np.integer)) or not 0 <= fold < NUM_FOLDS:
        raise ValueError(f"fold must be an int in [0, {NUM_FOLDS}), got {fold!r}")
    novel = (2 * fold, 2 * fold + 1)
    base = tuple(c for c in range(NUM_DIGITS) if c not in novel)
    return base, novel


@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """Scene geometry. ``canvas`` must be divisible by ``grid`` and each cell
    at least ``digit_size`` wide."""

    canvas: int = 32
    grid: int = 2
    digit_size: int = 14
    min_digits: int = 2
    max_digits: int = 3
    fg_threshold: float = 0.4
    ignore_threshold: float = 0.2
    dilate: int = 1
    # Per-digit scale factor ~ U[min_scale, 1] (antialiased linear resampling
    # about the digit's centre). 1.0: every digit at ``digit_size`` (the
    # default scenes, drawn from exactly the same random stream as before).
    min_scale: float = 1.0

    def __post_init__(self):
        for name in ("canvas", "grid", "digit_size"):
            check_int(name, getattr(self, name), min=1)
        if self.canvas % self.grid:
            raise ValueError(f"canvas={self.canvas} must be divisible by grid={self.grid}")
        if self.canvas // self.grid < self.digit_size:
            raise ValueError(f"cells of {self.canvas // self.grid} px cannot hold "
                             f"digit_size={self.digit_size}")
        if not 1 <= self.min_digits <= self.max_digits <= self.grid ** 2:
            raise ValueError(f"need 1 <= min_digits <= max_digits <= grid^2, got "
                             f"{self.min_digits}, {self.max_digits}, {self.grid ** 2}")
        if not isinstance(self.dilate, int) or self.dilate < 0:
            raise ValueError(f"dilate must be an int >= 0, got {self.dilate!r}")
        if not 0 <= self.ignore_threshold < self.fg_threshold < 1:
            raise ValueError("need 0 <= ignore_threshold < fg_threshold < 1")
        if not 0 < self.min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {self.min_scale!r}")


@flax.struct.dataclass
class DigitBank:
    """Upscaled digits of one split, grouped by class (device arrays).

    ``images`` (N, s, s) in [0, 1]; ``labels`` (N,); ``by_class`` (10, M)
    indices padded by repetition; ``counts`` (10,).
    """

    images: jax.Array
    labels: jax.Array
    by_class: jax.Array
    counts: jax.Array


@functools.lru_cache(maxsize=8)
def digit_bank(split: str, digit_size: int) -> DigitBank:
    """Digits of ``split`` ('train' or 'test', sklearn's bundled digits through
    :func:`gapjax.data.load_digits` with its fixed stratified split)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    tr, te = load_digits(normalize=False)
    s = tr if split == "train" else te
    x = jnp.asarray(s.x, jnp.float32)
    x = jax.image.resize(x, (x.shape[0], digit_size, digit_size), "bilinear")
    x = jnp.clip(x / jnp.maximum(jnp.max(x, axis=(1, 2), keepdims=True), 1e-6), 0, 1)
    y = np.asarray(s.y)
    counts = np.bincount(y, minlength=NUM_DIGITS)
    m = counts.max()
    by_class = np.stack([np.resize(np.flatnonzero(y == c), m) for c in range(NUM_DIGITS)])
    return DigitBank(x, jnp.asarray(y), jnp.asarray(by_class), jnp.asarray(counts))


def _draw(key, cfg: SceneConfig) -> dict:
    """All the randomness of one scene from a single ``uniform`` call (one
    threefry expansion keeps compile times small under vmap)."""
    n, S = cfg.grid ** 2, cfg.canvas
    sizes = {"tex": 15, "noise": S * S * 3, "order": n, "num": 1, "offs": 2 * n,
             "cols": 3 * n, "cls": n, "pick": n}
    if cfg.min_scale < 1:          # static: default scenes keep their stream
        sizes["scale"] = n
    u = jax.random.uniform(key, (sum(sizes.values()),))
    out, i = {}, 0
    for name, size in sizes.items():
        out[name] = u[i:i + size]
        i += size
    return out


def _texture(r, size):
    """Textured RGB background in [0, 0.7]: two random coloured sinusoidal
    gratings, a random base colour and uniform pixel noise (std 0.05)."""
    t = r["tex"]
    yy, xx = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32),
                          jnp.arange(size, dtype=jnp.float32), indexing="ij")
    img = jnp.zeros((size, size, 3))
    for i in range(2):
        freq = 0.15 + 1.05 * t[6 * i]
        ang = jnp.pi * t[6 * i + 1]
        phase = 2 * jnp.pi * t[6 * i + 2]
        wave = 0.5 + 0.5 * jnp.sin(freq * (jnp.cos(ang) * xx + jnp.sin(ang) * yy) + phase)
        img = img + 0.5 * wave[..., None] * t[None, None, 6 * i + 3:6 * i + 6]
    noise = (r["noise"].reshape(size, size, 3) - 0.5) * (0.05 * 12 ** 0.5)
    return jnp.clip(0.6 * img + 0.3 * t[None, None, 12:15] + noise, 0.0, 0.7)


def _dilate(x, r: int):
    """Binary dilation of (n, H, W) {0, 1} by a (2r+1)^2 square."""
    if r == 0:
        return x
    k = 2 * r + 1
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k), (1, 1, 1), "SAME")


def _rescale(digits, scale):
    """Shrinks each (s, s) digit of (n, s, s) about its centre by ``scale`` (n,)
    (antialiased linear resampling; the rest of the s x s box is 0)."""
    s = digits.shape[-1]

    def one(d, z):
        zz = jnp.stack([z, z])
        return jax.image.scale_and_translate(d, (s, s), (0, 1), zz, 0.5 * s * (1 - zz),
                                             "linear", antialias=True)

    out = jax.vmap(one)(digits, scale)
    # Renormalise so the peak stays 1 (antialiasing dims thin strokes): the
    # fg/ignore thresholds then select the same part of a stroke at any scale.
    return out / jnp.maximum(jnp.max(out, axis=(1, 2), keepdims=True), 1e-6)


def _compose(r, digits, classes, present, cfg: SceneConfig):
    g, s, S = cfg.grid, cfg.digit_size, cfg.canvas
    cell = S // g
    bg = _texture(r, S)
    offs = jnp.floor(r["offs"].reshape(g * g, 2) * (cell - s + 1)).astype(jnp.int32)
    cols = 0.35 + 0.65 * r["cols"].reshape(g * g, 3)
    if cfg.min_scale < 1:
        digits = _rescale(digits, cfg.min_scale + (1 - cfg.min_scale) * r["scale"])
    # Place each digit inside its cell with one-hot shift matrices (gather-
    # and scatter-free: cheap to compile under vmap).
    shift_r = jax.nn.one_hot(jnp.arange(s)[None, :] + offs[:, :1], cell)   # (n, s, cell)
    shift_c = jax.nn.one_hot(jnp.arange(s)[None, :] + offs[:, 1:], cell)
    a = digits * present[:, None, None].astype(digits.dtype)
    cells = jnp.einsum("nsr,nst,ntc->nrc", shift_r, a, shift_c)           # (n, cell, cell)
    # Object mask = strokes dilated by ``dilate`` px (a filled silhouette, like
    # PASCAL's object masks); ignore band = the next ``dilate`` px plus faint
    # stroke pixels outside it (PASCAL's void boundary). Per cell, so a mask
    # never leaks into a neighbour's cell.
    core = (cells > cfg.fg_threshold).astype(jnp.float32)
    fg = _dilate(core, cfg.dilate)
    band = jnp.maximum(_dilate(fg, cfg.dilate), (cells > cfg.ignore_threshold)) - fg
    lab_cells = jnp.where(fg > 0, 1 + classes[:, None, None],
                          jnp.where(band > 0, 255, 0)).astype(jnp.int32)
    alpha = cells.reshape(g, g, cell, cell).transpose(0, 2, 1, 3).reshape(S, S)
    lab = lab_cells.reshape(g, g, cell, cell).transpose(0, 2, 1, 3).reshape(S, S)
    col_map = jnp.broadcast_to(cols[:, None, None, :], (g * g, cell, cell, 3))
    col_map = col_map.reshape(g, g, cell, cell, 3).transpose(0, 2, 1, 3, 4).reshape(S, S, 3)
    img = (1.0 - alpha[..., None]) * bg + alpha[..., None] * col_map
    return img.astype(jnp.float32), lab


def compose_scene(key, digits, classes, present, cfg: SceneConfig):
    """One scene from per-cell digits.

    Arguments:
      key: PRNG key (texture, offsets, colours).
      digits: (grid^2, s, s) intensities in [0, 1]; classes: (grid^2,) int
        digit classes; present: (grid^2,) bool.
    Returns:
      ``(image (canvas, canvas, 3) float32, labels (canvas, canvas) int32)``
      with labels 0 / 1 + class / 255.
    """
    return _compose(_draw(key, cfg), digits, classes, present, cfg)


def _layout(r, cfg):
    """Random cell order and the present mask (``min..max`` digits)."""
    n = cfg.grid ** 2
    order = jnp.argsort(r["order"])
    num = cfg.min_digits + jnp.floor(
        r["num"][0] * (cfg.max_digits - cfg.min_digits + 1)).astype(jnp.int32)
    present = jnp.zeros(n, bool).at[order].set(jnp.arange(n) < num)
    return order, present


def _pick(bank: DigitBank, cls, u):
    """Index of a digit of class ``cls`` chosen by uniforms ``u`` (traced)."""
    j = jnp.floor(u * bank.counts[cls]).astype(jnp.int32)
    return bank.by_class[cls, jnp.minimum(j, bank.counts[cls] - 1)]


def base_scene(key, bank: DigitBank, base_classes, cfg: SceneConfig):
    """A training scene with base digits only.

    Returns ``(image, labels)`` with labels in the training label space:
    0 background, ``1 + index in base_classes``, 255 ignore.
    """
    base = jnp.asarray(base_classes)
    r = _draw(key, cfg)
    _, present = _layout(r, cfg)
    which = jnp.floor(r["cls"] * base.shape[0]).astype(jnp.int32)
    idx = _pick(bank, base[which], r["pick"])
    return _compose(r, bank.images[idx], which, present, cfg)


def episode_scene(key, bank: DigitBank, target, cfg: SceneConfig):
    """A scene that contains digit class ``target`` (traced int) in one cell.

    Returns ``(image, mask)``, mask 1 on ``target`` pixels, 255 ignore, else 0.
    """
    r = _draw(key, cfg)
    order, present = _layout(r, cfg)
    cls = jnp.floor(r["cls"] * NUM_DIGITS).astype(jnp.int32)
    cls = cls.at[order[0]].set(target)         # the forced cell (always present)
    idx = _pick(bank, cls, r["pick"])
    img, lab = _compose(r, bank.images[idx], cls, present, cfg)
    mask = jnp.where(lab == 255, 255, (lab == 1 + target).astype(jnp.int32))
    return img, mask


def sample_episodes(key, bank: DigitBank, novel_classes, shots: int, num_tasks: int,
                    cfg: SceneConfig):
    """``num_tasks`` few-shot tasks; task ``t`` uses ``fold_in(key, t)``.

    Returns a dict: ``support_images`` (T, K, S, S, 3), ``support_masks``
    (T, K, S, S), ``query_image`` (T, S, S, 3), ``query_mask`` (T, S, S),
    ``classes`` (T,) the target digit. The target class is uniform over
    ``novel_classes``. A support whose target occupies no pixel above
    ``fg_threshold`` cannot occur: every digit has max intensity 1.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    novel = tuple(int(c) for c in np.asarray(novel_classes).reshape(-1))
    return _episodes_fn(novel, int(shots), int(num_tasks), cfg)(key, bank)


@functools.lru_cache(maxsize=32)
def _episodes_fn(novel_classes: tuple, shots: int, num_tasks: int, cfg: SceneConfig):
    """The jitted episode sampler of one static setting (compiled once, reused
    across seeds)."""
    novel = jnp.asarray(novel_classes)

    def one(key, bank, t):
        keys = jax.random.split(jax.random.fold_in(key, t), shots + 2)
        u = jax.random.uniform(keys[shots + 1])
        c = novel[jnp.minimum(jnp.floor(u * novel.shape[0]).astype(jnp.int32),
                              novel.shape[0] - 1)]
        scenes = jax.vmap(lambda kk: episode_scene(kk, bank, c, cfg))(keys[:shots + 1])
        qi, qm = scenes[0][0], scenes[1][0]
        si, sm = scenes[0][1:], scenes[1][1:]
        return {"support_images": si, "support_masks": sm, "query_image": qi,
                "query_mask": qm, "classes": c}

    return jax.jit(lambda key, bank: jax.vmap(one, in_axes=(None, None, 0))(
        key, bank, jnp.arange(num_tasks)))
