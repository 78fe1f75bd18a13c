"""2D toy distributions as pure functions of a key, with exact densities where
they exist.

Every sampler has signature ``sampler(key, n) -> (n, 2) float32``. Mixtures are
:class:`GaussianMixture` pytrees (isotropic components) with ``sample`` and
``log_prob``; the checkerboard has an exact uniform density.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp


@flax.struct.dataclass
class GaussianMixture:
    """Isotropic Gaussian mixture ``sum_k pi_k N(mu_k, s_k^2 I)``.

    ``weights``: (K,) summing to 1; ``means``: (K, D); ``stds``: (K,).
    """

    weights: jax.Array
    means: jax.Array
    stds: jax.Array

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        kc, kn = jax.random.split(key)
        comp = jax.random.categorical(kc, jnp.log(self.weights), shape=(n,))
        eps = jax.random.normal(kn, (n, self.means.shape[1]), self.means.dtype)
        return self.means[comp] + self.stds[comp][:, None] * eps

    def log_prob(self, x: jax.Array) -> jax.Array:
        """(..., D) -> (...) exact log density."""
        k, d = self.means.shape
        lead = (1,) * (x.ndim - 1)
        diff = x[..., None, :] - self.means.reshape(lead + (k, d))
        stds = self.stds.reshape(lead + (k,))
        sq = jnp.sum(diff**2, -1) / stds**2
        logn = -0.5 * sq - d * jnp.log(stds) - 0.5 * d * math.log(2 * math.pi)
        return logsumexp(logn + jnp.log(self.weights).reshape(lead + (k,)), axis=-1)


def gaussian_mixture(means, stds, weights=None) -> GaussianMixture:
    """Validated :class:`GaussianMixture` (float32)."""
    means = jnp.asarray(means, jnp.float32)
    if means.ndim != 2:
        raise ValueError(f"means must be (K, D), got shape {means.shape}")
    k = means.shape[0]
    stds = jnp.broadcast_to(jnp.asarray(stds, jnp.float32), (k,))
    if weights is None:
        weights = jnp.full((k,), 1.0 / k, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    if weights.shape != (k,):
        raise ValueError(f"weights must have shape ({k},), got {weights.shape}")
    try:
        bad = bool(jnp.any(stds <= 0)) or bool(jnp.any(weights < 0))
    except jax.errors.ConcretizationTypeError:
        bad = False
    if bad:
        raise ValueError("stds must be > 0 and weights >= 0")
    return GaussianMixture(weights / jnp.sum(weights), means, stds)


def eight_gaussians_mixture(radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
    """Eight equal components on a circle of ``radius``."""
    ang = jnp.arange(8) * (2 * math.pi / 8)
    means = radius * jnp.stack([jnp.cos(ang), jnp.sin(ang)], -1)
    return gaussian_mixture(means, std)


def eight_gaussians(key, n, radius: float = 2.0, std: float = 0.2):
    return eight_gaussians_mixture(radius, std).sample(key, n)


def moons(key, n, noise: float = 0.1):
    """Two interleaving half circles (scikit-learn's layout), centred and scaled."""
    kb, kt, kn = jax.random.split(key, 3)
    upper = jax.random.bernoulli(kb, 0.5, (n,))
    t = jax.random.uniform(kt, (n,)) * math.pi
    x = jnp.where(upper, jnp.cos(t), 1.0 - jnp.cos(t))
    y = jnp.where(upper, jnp.sin(t), 0.5 - jnp.sin(t))
    pts = jnp.stack([x - 0.5, y - 0.25], -1) * 2.0
    return pts + noise * jax.random.normal(kn, (n, 2))


def checkerboard(key, n, size: int = 4, scale: float = 1.0):
    """Uniform on the black squares of a ``size x size`` board on [-2, 2]^2 * scale.

    Exact density: :func:`checkerboard_log_prob`.
    """
    kc, ku = jax.random.split(key)
    cells = jnp.array([(i, j) for i in range(size) for j in range(size) if (i + j) % 2 == 0])
    c = cells[jax.random.randint(kc, (n,), 0, cells.shape[0])]
    u = jax.random.uniform(ku, (n, 2))
    w = 4.0 / size
    return ((c + u) * w - 2.0) * scale


def checkerboard_log_prob(x, size: int = 4, scale: float = 1.0):
    """Exact log density of :func:`checkerboard` (``-inf`` off the support)."""
    w = 4.0 / size
    ij = jnp.floor((x / scale + 2.0) / w)
    inside = jnp.all((ij >= 0) & (ij < size), -1) & (jnp.sum(ij, -1) % 2 == 0)
    n_black = (size * size + 1) // 2
    area = n_black * (w * scale) ** 2
    return jnp.where(inside, -jnp.log(area), -jnp.inf)


def spirals(key, n, noise: float = 0.05):
    """Two interleaved Archimedean spirals."""
    kb, kt, kn = jax.random.split(key, 3)
    arm = jax.random.bernoulli(kb, 0.5, (n,))
    t = jnp.sqrt(jax.random.uniform(kt, (n,))) * 3 * math.pi
    r = t / (1.5 * math.pi)
    sgn = jnp.where(arm, 1.0, -1.0)
    pts = sgn[:, None] * jnp.stack([r * jnp.cos(t), r * jnp.sin(t)], -1)
    return pts + noise * jax.random.normal(kn, (n, 2))


TOY2D = {
    "8gaussians": eight_gaussians,
    "moons": moons,
    "checkerboard": checkerboard,
    "spirals": spirals,
}


def sample_toy2d(name: str, key, n: int):
    """Samples ``n`` points of the named toy distribution."""
    if name not in TOY2D:
        raise ValueError(f"unknown toy distribution {name!r}; valid: {sorted(TOY2D)}")
    return TOY2D[name](key, n)
