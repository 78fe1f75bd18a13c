"""Runs every benchmark and writes one JSON.

    python -m benchmarks.run_all --out DIR [--quick | --tiny] [--only icl,flow]

Each benchmark runs in its own subprocess (``python -m benchmarks.bench_<name>
--size S``): they set process-wide options (float64, 8 faked CPU devices, huge
pages) that must not leak into one another. ``--quick`` (sized to finish
within 5 minutes on one GPU) and the default full size are meant for a quiet
machine or an accelerator; ``--tiny`` only checks that everything runs (CI).
Every benchmark re-executes itself with huge pages for large mallocs, as the
runner (``gapjax._runtime``); except at ``--tiny`` the ICL benchmark runs a
second time without them (``icl_no_huge_pages``, ``GAPJAX_HUGE_PAGES=0``).
Writes ``DIR/benchmarks.json``: per benchmark its JSON (or its error), wall
seconds, and the environment; ``"reliable": false``
when the 1-minute load average was above 1.0 before the run. At full size it
waits, before each benchmark, up to 5 minutes for the load left by the previous
one to fall to 1.0 (``waited_for_quiet_s``); ``--quick`` does not wait.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from benchmarks import _harness as H

BENCHMARKS = ("flow", "icl", "repri", "ghost_bn", "deup", "scaling", "parallel")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _one(module, size, extra_env=None, extra_args=(), timeout=3600):
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "out.json"
        env = dict(os.environ, **(extra_env or {}))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--size", size,
                               "--out", str(out), *extra_args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            return {"error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-3000:],
                    "wall_s": wall}
        res = json.loads(out.read_text())
        res["wall_s"] = wall
        return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true")
    g.add_argument("--tiny", action="store_true", help="smoke sizes (CI); numbers meaningless")
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(BENCHMARKS))
    ap.add_argument("--jobs", type=int, default=1,
                    help="benchmarks at once; only with --tiny (timings need the machine alone)")
    a = ap.parse_args(argv)
    if a.jobs < 1 or (a.jobs > 1 and not a.tiny):
        ap.error("--jobs > 1 is only allowed with --tiny")
    size = "tiny" if a.tiny else "quick" if a.quick else "full"
    names = [n for n in a.only.split(",") if n] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        ap.error(f"unknown benchmarks {unknown}; choose from {BENCHMARKS}")
    out_dir = pathlib.Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    runs = []                      # (result name, module, extra env, extra args)
    for name in names:
        runs.append((name, f"bench_{name}", None, ()))
        if name == "icl" and size != "tiny":
            runs.append(("icl_no_huge_pages", "bench_icl", {"GAPJAX_HUGE_PAGES": "0"}, ()))

    def go(run):
        name, module, env, extra = run
        # full size is for a quiet CPU; --quick (a GPU within 5 minutes) does not wait
        waited = H.wait_for_quiet() if size == "full" else 0.0
        r = _one(module, size, extra_env=env, extra_args=extra)
        r["waited_for_quiet_s"] = round(waited, 1)
        print(f"== {name} ({size}): {'error' if 'error' in r else 'ok'} in "
              f"{r['wall_s']:.1f} s", flush=True)
        return name, r

    with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
        results = dict(pool.map(go, runs))
    summary = {"size": size, "benchmarks": results, "wall_s": time.perf_counter() - t0,
               "load_1min_before": load_before,
               "load_1min_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
               # each benchmark waited for the load to settle and judged its own
               "reliable": all(r.get("environment", {}).get("reliable", False)
                               for r in results.values()),
               "failed": sorted(n for n, r in results.items() if "error" in r)}
    path = out_dir / "benchmarks.json"
    path.write_text(json.dumps(summary, indent=1))
    print(f"wrote {path} ({len(results)} benchmarks, failed: {summary['failed'] or 'none'})")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
