"""Process-level runtime setting for CPU runs: huge pages for large mallocs.

XLA:CPU allocates a step's scratch with ``malloc`` on every call (566 MB for the
ICL small-preset train step, 5.2 GB for the official preset). glibc ``mmap``-s
such a block, the kernel faults it in one 4 KB page at a time, and ``free``
unmaps it: 144K page faults per small-preset step measured, a third of the step.
Where transparent huge pages are in ``madvise`` mode (the kernel default),
glibc's tunable ``glibc.malloc.hugetlb=1`` (glibc >= 2.35) advises the kernel to
back those blocks with 2 MB pages. On the 2-core CPU (issue 17,
``benchmarks/results/icl_2026-12-03_huge_pages_ab.json``: the ICL benchmark with
and without, both at a quiet load) the process's minor page faults fell from
77.7M to 1.7M and the small-preset step from 0.70 to 0.35 s (0.57x -> 1.16x eager
torch), with the same peak memory: blocks are still returned on ``free``.

glibc reads tunables only at process start, so :func:`reexec_with_huge_pages`
re-executes the command line (same PID, arguments and environment plus the
tunable). ``python -m gapjax.run``, ``python -m gapjax.reproduce`` and the
benchmarks call it first; nothing changes for code that imports gapjax. Opt out
with ``GAPJAX_HUGE_PAGES=0``.

Tried first and withdrawn (measured 2026-12-03): ``mallopt(M_ARENA_MAX=1,
M_MMAP_MAX=0, M_TRIM_THRESHOLD=...)`` from inside the process, which keeps freed
blocks in the heap for reuse. Applied after JAX's backend starts it does not
reach XLA's threads (their own arenas still ``mmap`` large blocks). Applied
before, the heap fragmented when JAX and torch steps alternate: 24 GB with
trimming off, and past 16 GB (killed) with a 2 GB trim threshold, in the ICL
benchmark process (JAX and torch steps of both presets).
"""

from __future__ import annotations

import os
import sys

OPT_OUT_ENV = "GAPJAX_HUGE_PAGES"
_TUNABLE = "glibc.malloc.hugetlb=1"
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_version() -> tuple[int, int] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()   # "glibc 2.36"
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):
        return None


def _thp_mode() -> str | None:
    """The bracketed mode of ``enabled`` (always / madvise / never), or None."""
    try:
        with open(_THP_MODE) as f:
            text = f.read()
    except OSError:
        return None
    return text[text.find("[") + 1:text.find("]")] if "[" in text else None


def huge_pages_active(environ=None) -> bool:
    """Whether large mallocs of a process with ``environ`` (default: this one's
    environment) get transparent huge pages: THP ``always``, or ``madvise``
    with the glibc tunable set."""
    environ = os.environ if environ is None else environ
    mode = _thp_mode()
    if mode == "always":
        return True
    return mode == "madvise" and _TUNABLE in environ.get("GLIBC_TUNABLES", "").split(":")


def huge_pages_env(environ=None) -> dict | None:
    """``environ`` (default: this process's) with ``glibc.malloc.hugetlb=1``
    added to ``GLIBC_TUNABLES``, or None when that would change nothing or is
    not wanted: not Linux, not glibc >= 2.35, transparent huge pages not in
    ``madvise`` mode, already active, or opted out (``GAPJAX_HUGE_PAGES=0``)."""
    environ = dict(os.environ if environ is None else environ)
    if environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if not sys.platform.startswith("linux") or (_glibc_version() or (0, 0)) < (2, 35):
        return None
    if _thp_mode() != "madvise" or huge_pages_active(environ):
        return None
    old = environ.get("GLIBC_TUNABLES", "")
    environ["GLIBC_TUNABLES"] = f"{old}:{_TUNABLE}" if old else _TUNABLE
    return environ


def reexec_with_huge_pages() -> None:
    """Replaces this process by the same command line with :func:`huge_pages_env`
    (``os.execve``: same PID, open files and arguments); returns without doing
    anything when that is None. Call it first thing in a program's ``__main__``
    (before threads start); never from library code or an interactive session."""
    env = huge_pages_env()
    argv = getattr(sys, "orig_argv", None)          # Python >= 3.10
    if env is None or not argv or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)
