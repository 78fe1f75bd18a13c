"""Test setup: 8 faked CPU devices, rank promotion errors, a key fixture.

float64 is enabled per test with ``jax.enable_x64(True)`` as a context manager
(``x64`` fixture) where theory is checked, so float32 tests stay float32.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import itertools  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """``getkey()`` returns a fresh key each call (deterministic per test)."""
    counter = itertools.count()
    base = jax.random.key(1234)
    return lambda: jax.random.fold_in(base, next(counter))


@pytest.fixture
def x64():
    """Runs the test body with float64 enabled."""
    with jax.enable_x64(True):
        yield
