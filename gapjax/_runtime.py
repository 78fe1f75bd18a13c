"""Process-level runtime settings for CPU runs (the runner applies them).

:func:`keep_host_memory` sets glibc's allocator so that XLA:CPU's per-call
scratch buffers are reused instead of freshly mapped. Without it every large
buffer (e.g. the 566 MB temporary of the ICL small-preset train step) is
``mmap``-ed, page-faulted in (144K faults per step measured) and unmapped on
every call. With it the faults drop to ~0 and that step ran 1.2-1.3x faster on
a 2-core CPU (issue 17). The trade-off: freed memory stays in the process, so
its resident size stays at its peak until exit (and one malloc arena means
threads share one allocator lock). Opt out with ``GAPJAX_KEEP_HOST_MEMORY=0``.

Measured 2026-12-03 and not adopted (see issue 17's note): applied *before* JAX's
backend starts, with trimming off (``M_TRIM_THRESHOLD=-1``), these settings take
the ICL step's page faults to 0 (small preset 0.39 -> 0.27 s per step, official
gradient 8.0 -> 4.7 s). But with every block in one never-trimmed heap,
fragmentation grew a benchmark process that alternates JAX and torch steps of
two presets to 24 GB and it was OOM-killed. Applied as here (after the backend
starts), XLA's threads keep their own arenas, whose large blocks are still
mmap-ed, so the effect on XLA's scratch is small.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
OPT_OUT_ENV = "GAPJAX_KEEP_HOST_MEMORY"
_state = {"applied": False}


def host_memory_kept() -> bool:
    """Whether :func:`keep_host_memory` has been applied in this process."""
    return _state["applied"]


def keep_host_memory(*, cpu_only: bool = True) -> bool:
    """``mallopt(M_ARENA_MAX=1, M_MMAP_MAX=0, M_TRIM_THRESHOLD=2^31-1)`` on Linux.

    The same as ``GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:
    glibc.malloc.trim_threshold=2147483647`` but set from inside the process.
    Irreversible for the process: large blocks come from the heap (no ``mmap``)
    and the heap is never trimmed, so memory is reused across calls and the
    process keeps its peak memory until it exits.

    Arguments:
      cpu_only: apply only when JAX's default backend is the CPU (on an
        accelerator the large buffers live in device memory).
    Returns:
      True if applied; False off Linux/glibc, on another backend with
      ``cpu_only``, or when ``GAPJAX_KEEP_HOST_MEMORY=0`` opts out.
    """
    if not isinstance(cpu_only, bool):
        raise TypeError(f"cpu_only must be a bool, got {type(cpu_only).__name__}")
    if os.environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    if cpu_only:
        import jax

        if jax.default_backend() != "cpu":
            return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):      # musl and other libcs: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = [mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0),
          mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)]
    _state["applied"] = all(r == 1 for r in ok)   # mallopt returns 1 on success
    return _state["applied"]
