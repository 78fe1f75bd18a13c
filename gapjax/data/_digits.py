"""scikit-learn's bundled 8x8 digits (1797 images, 10 classes)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    """Arrays of one split. ``x``: (N, 8, 8) or (N, 64) float32 in [0, 1] before
    normalisation; ``y``: (N,) int32 labels."""

    x: np.ndarray
    y: np.ndarray


@functools.lru_cache(maxsize=None)
def _raw():
    from sklearn.datasets import load_digits as _load

    d = _load()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int32)


def load_digits(*, test_fraction: float = 0.25, flat: bool = False,
                normalize: bool = True, seed: int = 0) -> tuple[Split, Split]:
    """Deterministic stratified train/test split of the bundled digits.

    Arguments:
      test_fraction: fraction of every class put in the test split, in (0, 1).
      flat: return (N, 64) instead of (N, 8, 8).
      normalize: standardise with the *train* mean/std per pixel
        (``(x - mean) / (std + 1e-6)``); otherwise pixels in [0, 1].
      seed: numpy seed of the split permutation (the split is a pure function of it).
    Returns:
      ``(train, test)`` :class:`Split` s; images float32, labels int32.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    x, y = _raw()
    rs = np.random.RandomState(seed)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        idx = idx[rs.permutation(len(idx))]
        test_idx.append(idx[: int(round(test_fraction * len(idx)))])
    test_idx = np.sort(np.concatenate(test_idx))
    mask = np.zeros(len(y), bool)
    mask[test_idx] = True
    xtr, ytr, xte, yte = x[~mask], y[~mask], x[mask], y[mask]
    if normalize:
        mean, std = xtr.mean(0), xtr.std(0)
        xtr = (xtr - mean) / (std + 1e-6)
        xte = (xte - mean) / (std + 1e-6)
    if flat:
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    return Split(xtr.astype(np.float32), ytr), Split(xte.astype(np.float32), yte)
