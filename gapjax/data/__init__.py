"""Data: scikit-learn's bundled digits, 2D toy distributions, keyed batches.

No downloads: digits ship inside scikit-learn; everything else is generated
from explicit PRNG keys.
"""

from gapjax.data._digits import Split, load_digits
from gapjax.data._toy2d import (TOY2D, GaussianMixture, checkerboard,
                                checkerboard_log_prob, eight_gaussians,
                                eight_gaussians_mixture, gaussian_mixture, moons,
                                sample_toy2d, spirals)
from gapjax.data._batches import batch_at, epoch_batches

__all__ = [
    "Split", "load_digits", "TOY2D", "GaussianMixture", "checkerboard",
    "eight_gaussians", "eight_gaussians_mixture", "checkerboard_log_prob",
    "gaussian_mixture", "moons", "sample_toy2d", "spirals",
    "batch_at", "epoch_batches",
]
