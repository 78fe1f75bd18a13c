"""Runs one experiment's training/evaluation entry.

    python -m gapjax.run <experiment> --config <experiment>[:arg] \
        --workdir DIR [--resume] [--config.key=value ...]

``--config`` is a bundled config name (``icl:quick``, from ``gapjax.configs``) or
a path to any ``get_config()`` file (``configs/icl.py:quick``).

``<experiment>`` is one of :data:`gapjax.report.EXPERIMENTS`; the module
``experiments/<experiment>.py`` provides ``main(config, workdir) -> dict``.
Writes ``config.json`` before and ``summary.json`` after the run (the method
writes ``metrics.jsonl`` and ``figures/*.png``).

Exit status: 0 finished; 1 failed (e.g. a non-finite loss: the message names
the step and the measurement, and the newest checkpoint is finite); 2 bad
arguments; 75 (``EX_TEMPFAIL``) preempted: SIGTERM at any point, the state of
the current step was checkpointed, no ``summary.json`` was written; requeue the
same command with ``--resume``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

EXIT_PREEMPTED = 75  # EX_TEMPFAIL of sysexits.h: "try again later" (requeue)


def _exit_preempted(message: str, summary=None):
    """SIGTERM handler for everything outside the training loop (which defers
    SIGTERM to the end of its step and checkpoints): there is nothing new to
    save, so exit at once, removing ``summary`` (an unfinished run has none).
    ``os._exit`` because an exception raised in a signal handler can be
    swallowed (e.g. when it lands in a garbage-collector callback).
    """
    def handle(signum, frame):
        if summary is not None:
            try:
                os.unlink(summary)
            except OSError:
                pass
        os.write(2, (message + "\n").encode())
        os._exit(EXIT_PREEMPTED)

    return handle


if __name__ == "__main__":  # before the slow imports: SIGTERM at start-up is a preemption
    from gapjax._runtime import reexec_with_huge_pages
    reexec_with_huge_pages()   # Linux CPU: huge pages for XLA's step scratch (GAPJAX_HUGE_PAGES=0)
    signal.signal(signal.SIGTERM, _exit_preempted(
        "preempted (SIGTERM) at start-up, resume with --resume"))

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402

from gapjax.config import apply_overrides, load_config  # noqa: E402
from gapjax.report import EXPERIMENTS, _jsonable  # noqa: E402
from gapjax.train import (NonFiniteError, Preempted, check_workdir,  # noqa: E402
                          write_metrics)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m gapjax.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", choices=EXPERIMENTS)
    ap.add_argument("--config", required=True,
                    help="bundled name[:arg] (e.g. icl:quick) or path/to/config.py[:arg]")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--resume", action="store_true",
                    help="continue from the newest good checkpoint in workdir")
    args, rest = ap.parse_known_args(argv)
    overrides = []
    for r in rest:
        if not r.startswith("--config."):
            ap.error(f"unrecognised argument {r!r} (overrides look like --config.key=value)")
        overrides.append(r[len("--config."):])
    return args, overrides


def _scalar_leaves(tree, prefix="") -> dict:
    """Numeric leaves of nested dicts as ``{"a/b": value}``."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_scalar_leaves(v, f"{prefix}{k}/"))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[prefix.rstrip("/")] = tree
    return out


def main(argv=None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    config = apply_overrides(load_config(args.config), overrides)
    if args.resume:
        if "resume" not in config:
            raise ValueError(f"--resume given but config {args.config} has no 'resume' key")
        config.resume = True
    workdir = check_workdir(args.workdir)
    hint = ("resume with --resume" if "resume" in config else
            "this experiment keeps no checkpoints: run the same command again")
    on_main = threading.current_thread() is threading.main_thread()
    old = (signal.signal(signal.SIGTERM, _exit_preempted(
        f"preempted (SIGTERM) outside training, {hint}", workdir / "summary.json"))
        if on_main else None)
    try:
        return _run(args.experiment, config, workdir, hint)
    finally:
        if on_main and old is not None:
            signal.signal(signal.SIGTERM, old)


def _run(experiment, config, workdir, hint) -> int:
    (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=1, default=str))
    (workdir / "summary.json").unlink(missing_ok=True)  # never an earlier run's as this one's
    try:
        module = importlib.import_module(f"gapjax.experiments.{experiment}")
        summary = module.main(config, workdir)
    except Preempted as e:  # SIGTERM in training: the current step was checkpointed
        print(e if "resume" in config else f"preempted; {hint}", file=sys.stderr, flush=True)
        return EXIT_PREEMPTED
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    if not (workdir / "summary.json").exists() or summary:
        (workdir / "summary.json").write_text(json.dumps(_jsonable(summary or {}), indent=1))
    if not (workdir / "metrics.jsonl").exists():
        # Experiments without a step-wise training loop (closed forms, scans of
        # small fits) log their final scalar measurements as one row.
        row = {"step": 0, "split": "final", **_scalar_leaves(_jsonable(summary or {}))}
        write_metrics(workdir, [row])  # metrics.jsonl and TensorBoard
    print(f"run finished: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
