"""gapjax._runtime.keep_host_memory: glibc keeps large blocks in the heap."""

import subprocess
import sys

import numpy as np
import pytest

_PROBE = """
import ctypes, resource, sys
import numpy as np
from gapjax._runtime import host_memory_kept, keep_host_memory
assert not host_memory_kept()
applied = keep_host_memory(cpu_only=False)
assert host_memory_kept() == applied

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

def kept_after_free(n=64 << 20):
    r0 = rss()
    a = np.ones(n, np.uint8); del a          # a 64 MB buffer, touched, then freed
    return (rss() - r0) / n

def heap_top_kept_after_free(n=(2 << 30) + (256 << 20)):
    # A block above 2 GB (the step scratch of the ICL official preset is 5.2 GB)
    # from the heap, never touched (virtual only), then freed: is the program
    # break kept (trimming off) or given back?
    sbrk = ctypes.CDLL("libc.so.6").sbrk
    sbrk.restype, sbrk.argtypes = ctypes.c_void_p, (ctypes.c_long,)
    try:
        a = np.empty(n, np.uint8)
    except MemoryError:
        return "nan"
    top = sbrk(0); del a
    return (sbrk(0) - top) / n + 1.0    # 1.0: kept; ~0 (or below): trimmed/unmapped

print(applied, kept_after_free(), heap_top_kept_after_free())
"""


def _probe(env_extra=None):
    import os
    env = dict(os.environ, **(env_extra or {}))
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    applied, kept, top = out.stdout.split()
    return applied == "True", float(kept), float(top)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_keep_host_memory_reuses_freed_buffers():
    # A fresh subprocess each, since the setting is irreversible for a process.
    # Default glibc: a 64 MB block is mmap-ed and unmapped on free, so the
    # resident size drops back (the next call maps and faults it in afresh).
    # With the setting it comes from the heap and stays resident for reuse: the
    # documented trade-off. Fractions of the 64 MB kept after the free; the
    # thresholds leave room for the interpreter's own small allocations.
    applied, kept, top = _probe()
    assert applied
    assert kept > 0.9
    # trimming is off for any size: a freed 2.25 GB top of heap stays mapped
    # (2^31 - 1, the former threshold, gave it back, and the next call
    # faulted it in again); nan when the machine cannot reserve 2.25 GB
    assert np.isnan(top) or top > 0.99
    off, kept_default, _ = _probe({"GAPJAX_KEEP_HOST_MEMORY": "0"})
    assert not off
    assert kept_default < 0.1


def test_keep_host_memory_bad_input():
    from gapjax._runtime import keep_host_memory
    with pytest.raises(TypeError, match="cpu_only"):
        keep_host_memory(cpu_only="yes")


_STEP_PROBE = """
import resource, sys
if sys.argv[1] == "late":                  # start the backend first
    import jax
    jax.numpy.ones(1).block_until_ready()
from gapjax._runtime import keep_host_memory
applied = keep_host_memory(cpu_only=False)
import jax, jax.numpy as jnp
x = jnp.ones((1 << 18, 64), jnp.float32)
w = jnp.ones((64, 64), jnp.float32) / 64
f = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.tanh(x @ w) @ w), 1))
temp = f.lower(x, w).compile().memory_analysis().temp_size_in_bytes
fracs = []
for _ in range(10):   # the heap grows over the first calls (two calls' scratch
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt   # can be live at once)
    f(x, w).block_until_ready()
    fracs.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
                 * resource.getpagesize() / temp)
print(applied, sorted(fracs[4:])[3])   # the median of calls 5..10
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_step_scratch_is_not_faulted_in_again_when_applied_before_the_backend():
    """A jitted gradient with a 192 MB scratch: per call, the fraction of the
    scratch faulted in afresh (median of calls 5..10). Applied before JAX's backend starts: 0;
    opted out: all of it; applied after the backend started: all of it again (the
    XLA threads' own malloc arenas mmap large blocks), with a warning."""
    import os

    def probe(mode, **env):
        out = subprocess.run([sys.executable, "-c", _STEP_PROBE, mode], capture_output=True,
                             text=True, timeout=300, env=dict(os.environ, **env))
        assert out.returncode == 0, out.stderr[-2000:]
        applied, frac = out.stdout.split()
        return applied == "True", float(frac), out.stderr

    applied, frac, _ = probe("first")
    assert applied and frac < 0.02
    applied, frac, _ = probe("first", GAPJAX_KEEP_HOST_MEMORY="0")
    assert not applied and frac > 0.9
    applied, frac, err = probe("late")
    assert applied and frac > 0.9 and "after JAX's backend started" in err
