"""The main job: quick (or full) reproduction of every registered experiment.

    python -m gapjax.reproduce --quick --out DIR [--only ghost_bn,flow,...]

Runs ``experiments/<name>.py:run(out_dir, quick)`` for every name in
:data:`gapjax.report.EXPERIMENTS` (or those given), and writes
``DIR/report.md`` (claim, measured, target, PASS/FAIL, figure) and
``DIR/report.json`` (list of objects with ``experiment``, ``claim``,
``measured``, ``target``, ``passed``), ``DIR/timings.json`` and ``DIR/run.json``
(the command, the git commit when run from a checkout, start/end, load average
before/after, machine). An experiment that crashes is reported
as one FAIL row with the error, and the others still run; the exit code is 1
if any experiment crashed, 75 (``EX_TEMPFAIL``, "requeue") if it was stopped by
SIGTERM, else 0 (a FAIL claim is a result, not a crash). On Linux it re-executes
itself with huge pages for large mallocs (:mod:`gapjax._runtime`; opt out with
``GAPJAX_HUGE_PAGES=0``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import platform
import sys
import time
import traceback

if __name__ == "__main__":     # before jax starts any thread
    from gapjax._runtime import reexec_with_huge_pages
    reexec_with_huge_pages()

import jax  # noqa: E402

from gapjax.report import EXPERIMENTS, Claim, write_report  # noqa: E402
from gapjax.train import Preempted  # noqa: E402

EXIT_PREEMPTED = 75  # EX_TEMPFAIL, as python -m gapjax.run


def run_experiments(names, out: pathlib.Path, quick: bool) -> tuple[list[Claim], dict, bool]:
    rows, timings, crashed = [], {}, False
    for name in names:
        t0 = time.perf_counter()
        print(f"[reproduce] {name} ({'quick' if quick else 'full'}) ...", flush=True)
        try:
            module = importlib.import_module(f"gapjax.experiments.{name}")
            got = list(module.run(out, quick=quick))
            if not got:
                raise RuntimeError("experiment returned no claims")
        except Exception as e:  # report and go on with the next experiment
            traceback.print_exc()
            crashed = True
            got = [Claim(name, "experiment ran to completion", f"{type(e).__name__}: {e}",
                         "no exception", False)]
        timings[name] = time.perf_counter() - t0
        rows += got
        n_pass = sum(bool(r.passed) for r in got)
        print(f"[reproduce] {name}: {n_pass}/{len(got)} claims PASS "
              f"in {timings[name]:.0f} s", flush=True)
    return rows, timings, crashed


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _load():
    try:
        return [float(v) for v in open("/proc/loadavg").read().split()[:3]]
    except (OSError, ValueError):
        return None


def _commit() -> str | None:
    """``git describe --always --dirty`` of the checkout gapjax runs from, if any
    (None for an installed gapjax: its folder may sit inside another project's
    repository, whose commit would be the wrong one)."""
    import subprocess

    root = pathlib.Path(__file__).resolve().parent.parent
    if not (root / ".git").exists() or not (root / "pyproject.toml").is_file():
        return None
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10, cwd=root)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _provenance(argv, started, load_before, total) -> dict:
    """What ``run.json`` records: how to make the report again and where it ran."""
    import os

    from gapjax._runtime import huge_pages_active

    return {"command": "python -m gapjax.reproduce " + " ".join(argv),
            "commit": _commit(), "started": started, "ended": _now(),
            "wall_s": round(total, 1), "load_before": load_before, "load_after": _load(),
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "jax": jax.__version__, "backend": jax.default_backend(),
            "devices": jax.device_count(), "huge_pages": huge_pages_active()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gapjax.reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="quick settings (default)")
    mode.add_argument("--full", action="store_true", help="paper-scale settings")
    ap.add_argument("--out", required=True,
                    help="output folder (created with its parents if missing)")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(EXPERIMENTS))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        ap.error(f"unknown experiment(s) {unknown}; valid: {', '.join(EXPERIMENTS)}")
    out = pathlib.Path(args.out).absolute()
    if out.exists() and not out.is_dir():
        ap.error(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        ap.error(f"--out {out} cannot be created: {e}")
    quick = not args.full
    t0 = time.perf_counter()
    started = _now()
    load_before = _load()
    try:
        rows, timings, crashed = run_experiments(names, out, quick)
    except Preempted as e:  # SIGTERM inside a training loop: nothing partial is reported
        print(f"[reproduce] {e}; no report written: run the same command again",
              file=sys.stderr, flush=True)
        return EXIT_PREEMPTED
    total = time.perf_counter() - t0
    header = (f"Mode: {'quick' if quick else 'full'}; jax {jax.__version__} on "
              f"{jax.default_backend()} ({jax.device_count()} device(s)), "
              f"{platform.machine()}; total {total:.0f} s; per experiment: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    md, js = write_report(rows, out, header)
    (out / "timings.json").write_text(json.dumps({"total_s": total, **timings}, indent=1))
    (out / "run.json").write_text(json.dumps(_provenance(
        argv, started, load_before, total), indent=1))
    n_pass = sum(bool(r.passed) for r in rows)
    print(f"[reproduce] {n_pass}/{len(rows)} claims PASS; report: {md} (and {js.name})")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
