"""Shared timing harness of the benchmarks: paired, alternating rounds.

Timing all of one side and then all of the other lets load that comes and goes
land on one side only (under load torch's OpenMP threads slowed 5-12x, JAX's
about 2.6x: committed ratios were off by up to 4x). :func:`compare` instead runs
every side once per round, alternating the order (A B, B A, A B, ...), and
reports each round's paired ratio and the median. :func:`environment` records
the 1-minute load average before and after; a run that started with a load
above :data:`MAX_QUIET_LOAD` is marked ``"reliable": false``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any, Callable

from gapjax._runtime import huge_pages_active, reexec_with_huge_pages  # noqa: F401

MAX_QUIET_LOAD = 1.0
SIZES = ("full", "quick", "tiny")   # tiny: CI smoke sizes, numbers meaningless


def load_1min() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _memory() -> dict:
    """The process's peak resident size (MB) and minor page faults so far."""
    try:
        import resource
    except ImportError:
        return {"peak_rss_mb": None, "minor_page_faults": None}
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"peak_rss_mb": ru.ru_maxrss / 1024, "minor_page_faults": ru.ru_minflt}  # KB: Linux


def wait_for_quiet(max_wait_s: float = 300.0, poll_s: float = 5.0) -> float:
    """Sleeps until the 1-minute load average is at most :data:`MAX_QUIET_LOAD`
    (a benchmark that just ended leaves it near the core count for about a
    minute), at most ``max_wait_s``; returns the seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait_s:
        load = load_1min()
        if load is None or load <= MAX_QUIET_LOAD:
            break
        time.sleep(poll_s)
    return time.perf_counter() - t0


def environment(load_before: float | None) -> dict:
    """Machine, versions and load; ``reliable`` is False above a load of 1.0."""
    import jax

    dev = jax.devices()[0]
    load_after = load_1min()
    env = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "jax": jax.__version__,
           "backend": jax.default_backend(), "device_kind": dev.device_kind,
           "device_count": jax.device_count(),
           "load_1min_before": load_before, "load_1min_after": load_after,
           "huge_pages": huge_pages_active(), **_memory(),
           "reliable": load_before is not None and load_before <= MAX_QUIET_LOAD}
    try:
        import torch
        env.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    except ImportError:
        env["torch"] = "not installed"
    return env


def compare(sides: dict[str, Callable[[], Any]], *, rounds: int, baseline: str | None = None,
            warmup: int = 1) -> dict:
    """Times every side once per round, alternating the order round by round.

    Arguments:
      sides: name -> zero-argument callable that runs one timed unit to
        completion (it must block, e.g. ``jax.block_until_ready``).
      rounds: timed rounds (after ``warmup`` untimed calls of each side).
      baseline: a side name; for each other side ``s`` every round gives the
        paired ratio ``t_baseline / t_s`` (> 1: ``s`` is faster).
    Returns:
      ``{"rounds": [{side: seconds}], "median_s": {side: s}, "min_s": {side: s},
      "ratio_over_<baseline>": {side: {"rounds": [...], "median": r}}}``.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if baseline is not None and baseline not in sides:
        raise ValueError(f"baseline {baseline!r} is not one of the sides {list(sides)}")
    names = list(sides)
    for _ in range(warmup):
        for n in names:
            sides[n]()
    per_round = []
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        row = {}
        for n in order:
            t0 = time.perf_counter()
            sides[n]()
            row[n] = time.perf_counter() - t0
        per_round.append(row)
    out = {"rounds": per_round,
           "median_s": {n: statistics.median(r[n] for r in per_round) for n in names},
           "min_s": {n: min(r[n] for r in per_round) for n in names}}
    if baseline is not None:
        ratios = {}
        for n in names:
            if n != baseline:
                rr = [r[baseline] / r[n] for r in per_round]
                ratios[n] = {"rounds": rr, "median": statistics.median(rr)}
        out[f"ratio_over_{baseline}"] = ratios
    return out


def torch_or_none():
    """``torch`` if installed, else None (CI does not install it)."""
    try:
        import torch
        return torch
    except ImportError:
        return None


def check_size(size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return size


def write(result: dict, path: str | None):
    text = json.dumps(result, indent=1, default=float)
    if path:
        with open(path, "w") as f:
            f.write(text)
    print(text)
