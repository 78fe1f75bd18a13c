"""gapjax._runtime: the runners re-execute themselves with huge pages for large
mallocs (glibc.malloc.hugetlb=1), so XLA's per-call step scratch is faulted in
2 MB at a time instead of 4 KB."""

import os
import subprocess
import sys

import pytest

from gapjax import _runtime as R

needs_hugetlb = pytest.mark.skipif(
    R.huge_pages_env() is None, reason="no glibc >= 2.35 with THP in madvise mode, or opted out")


def test_huge_pages_env_adds_the_tunable_only_where_it_changes_something(monkeypatch):
    monkeypatch.setattr(R, "_glibc_version", lambda: (2, 36))
    monkeypatch.setattr(R, "_thp_mode", lambda: "madvise")
    monkeypatch.setattr(sys, "platform", "linux")
    assert R.huge_pages_env({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    env = R.huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "b"})
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1",
                   "A": "b"}
    assert R.huge_pages_active(env) and R.huge_pages_env(env) is None   # no second exec
    for off in ("0", "false", "off"):
        assert R.huge_pages_env({"GAPJAX_HUGE_PAGES": off}) is None
    monkeypatch.setattr(R, "_glibc_version", lambda: (2, 34))   # no hugetlb tunable
    assert R.huge_pages_env({}) is None
    monkeypatch.setattr(R, "_glibc_version", lambda: (2, 36))
    for mode, active in (("always", True), ("never", False), (None, False)):
        monkeypatch.setattr(R, "_thp_mode", lambda: mode)
        assert R.huge_pages_env({}) is None and R.huge_pages_active({}) == active
    monkeypatch.setattr(R, "_thp_mode", lambda: "madvise")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert R.huge_pages_env({}) is None


_REEXEC = """
import os, sys
print("start", os.getpid(), flush=True)
from gapjax._runtime import huge_pages_active, reexec_with_huge_pages
reexec_with_huge_pages()
print("after", os.getpid(), huge_pages_active(), sys.argv[1:], flush=True)
"""


@needs_hugetlb
def test_reexec_keeps_the_pid_and_arguments_and_adds_the_tunable():
    out = subprocess.run([sys.executable, "-c", _REEXEC, "a b", "--c"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    pid = lines[0].split()[1]
    assert lines == [f"start {pid}", f"start {pid}", f"after {pid} True ['a b', '--c']"]
    off = subprocess.run([sys.executable, "-c", _REEXEC], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, GAPJAX_HUGE_PAGES="0"))
    assert off.stdout.splitlines()[1:] == [f"after {off.stdout.split()[1]} False []"]


_STEP_PROBE = """
import resource, sys
from gapjax._runtime import huge_pages_active, reexec_with_huge_pages
reexec_with_huge_pages()
import jax, jax.numpy as jnp
x = jnp.ones((1 << 18, 64), jnp.float32)
w = jnp.ones((64, 64), jnp.float32) / 64
f = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.tanh(x @ w) @ w), 1))
temp = f.lower(x, w).compile().memory_analysis().temp_size_in_bytes
fracs = []
for _ in range(10):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x, w).block_until_ready()
    fracs.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
                 * resource.getpagesize() / temp)
print(huge_pages_active(), temp, sorted(fracs[4:])[3])   # the median of calls 5..10
"""


@needs_hugetlb
def test_step_scratch_is_faulted_in_huge_pages():
    """A jitted gradient with a 192 MB scratch: page faults per call times 4 KB,
    as a fraction of the scratch. With glibc's defaults every 4 KB page is
    faulted in afresh on every call (fraction ~1); with huge pages one fault
    maps 2 MB (fraction ~1/512), unless the kernel finds no free huge page."""
    def probe(**env):
        out = subprocess.run([sys.executable, "-c", _STEP_PROBE], capture_output=True,
                             text=True, timeout=300, env=dict(os.environ, **env))
        assert out.returncode == 0, out.stderr[-2000:]
        active, temp, frac = out.stdout.split()
        assert int(temp) > 100 << 20
        return active == "True", float(frac)

    active, frac = probe()
    assert active and frac < 0.1
    active, frac = probe(GAPJAX_HUGE_PAGES="0")
    assert not active and frac > 0.9
