"""gapjax._runtime.keep_host_memory: glibc keeps large blocks in the heap."""

import subprocess
import sys

import pytest

_PROBE = """
import resource, sys
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

print(applied, kept_after_free())
"""


def _probe(env_extra=None):
    import os
    env = dict(os.environ, **(env_extra or {}))
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    applied, kept = out.stdout.split()
    return applied == "True", float(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_keep_host_memory_reuses_freed_buffers():
    # A fresh subprocess each, since the setting is irreversible for a process.
    # Default glibc: a 64 MB block is mmap-ed and unmapped on free, so the
    # resident size drops back (the next call maps and faults it in afresh).
    # With the setting it comes from the heap and stays resident for reuse: the
    # documented trade-off. Fractions of the 64 MB kept after the free; the
    # thresholds leave room for the interpreter's own small allocations.
    applied, kept = _probe()
    assert applied
    assert kept > 0.9
    off, kept_default = _probe({"GAPJAX_KEEP_HOST_MEMORY": "0"})
    assert not off
    assert kept_default < 0.1


def test_keep_host_memory_bad_input():
    from gapjax._runtime import keep_host_memory
    with pytest.raises(TypeError, match="cpu_only"):
        keep_host_memory(cpu_only="yes")
