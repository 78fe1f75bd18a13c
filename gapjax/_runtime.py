"""Process-level runtime settings for CPU runs (the runner applies them).

:func:`keep_host_memory` sets glibc's allocator so that XLA:CPU's per-call
scratch buffers are reused instead of freshly mapped. Without it every large
buffer (e.g. the 566 MB temporary of the ICL small-preset train step) is
``mmap``-ed, page-faulted in (144K faults per step measured) and unmapped on
every call. With it the faults drop to 0 and that step ran 1.2-1.3x faster on
a 2-core CPU (issue 17); the official preset's gradient (5.2 GB scratch) 1.7x. The trade-off: freed memory stays in the process, so
its resident size stays at its peak until exit (and one malloc arena means
threads share one allocator lock). Opt out with ``GAPJAX_KEEP_HOST_MEMORY=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import warnings

# glibc <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
OPT_OUT_ENV = "GAPJAX_KEEP_HOST_MEMORY"
_state = {"applied": False}


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):    # another JAX: assume it has started
        return True


def _platform_is_cpu() -> bool | None:
    """The default platform without starting JAX's backend; None if unknown."""
    import importlib.metadata
    import importlib.util

    import jax

    platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
    if platforms.strip():
        return platforms.split(",")[0].strip().lower() == "cpu"
    plugins = importlib.metadata.entry_points(group="jax_plugins")
    if (list(plugins) or importlib.util.find_spec("jax_plugins") is not None
            or importlib.util.find_spec("libtpu") is not None):
        return None                  # an accelerator may be present
    return True


def host_memory_kept() -> bool:
    """Whether :func:`keep_host_memory` has been applied in this process."""
    return _state["applied"]


def keep_host_memory(*, cpu_only: bool = True) -> bool:
    """``mallopt(M_ARENA_MAX=1, M_MMAP_MAX=0, M_TRIM_THRESHOLD=-1)`` on Linux.

    Like ``GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:
    glibc.malloc.trim_threshold=<more than the peak>`` but set from inside the
    process. ``-1`` disables trimming completely (mallopt(3)); the earlier
    ``2^31 - 1`` still trimmed any free top of heap above 2 GB, which the ICL
    official preset's 5.2 GB step scratch exceeds: 1.4M page faults and 8.0 s
    per gradient against 0 faults and 4.7 s with trimming off (2-core CPU).
    Irreversible for the process: large blocks come from the heap (no ``mmap``)
    and the heap is never trimmed, so memory is reused across calls and the
    process keeps its peak memory until it exits.

    Call it first thing, before JAX's backend starts: glibc fixes its arena limit
    when a second thread first allocates, and a large block a thread takes from
    its own arena is always ``mmap``-ed (arenas other than the main one cannot
    grow past 64 MB). Called after the backend has started, the XLA threads keep
    their arenas: 130K page faults per ICL small-preset step measured, 0 when
    applied before (the step 1.5x faster). So the backend is not started here
    when the platform can be told without it (``jax_platforms`` / the
    ``JAX_PLATFORMS`` variable, or no accelerator plugin installed); a warning
    says when it had already started.

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
    started = _backend_started()
    if cpu_only:
        on_cpu = None if started else _platform_is_cpu()
        if on_cpu is None:           # cannot tell without starting the backend
            import jax

            on_cpu, started = jax.default_backend() == "cpu", True
        if not on_cpu:
            return False
    if started:
        warnings.warn("keep_host_memory() runs after JAX's backend started: threads "
                      "that already allocated keep their own malloc arenas, whose "
                      "large blocks are still mmap-ed on every call; call it before "
                      "any JAX computation (or set JAX_PLATFORMS=cpu)",
                      RuntimeWarning, stacklevel=2)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):      # musl and other libcs: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = [mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0),
          mallopt(_M_TRIM_THRESHOLD, -1)]
    _state["applied"] = all(r == 1 for r in ok)   # mallopt returns 1 on success
    return _state["applied"]
