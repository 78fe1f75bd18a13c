"""Runs one experiment's training/evaluation entry.

    python -m gapjax.run <experiment> --config <experiment>[:arg] \
        --workdir DIR [--resume] [--config.key=value ...]

``--config`` is a bundled config name (``icl:quick``, from ``gapjax.configs``) or
a path to any ``get_config()`` file (``configs/icl.py:quick``).

``<experiment>`` is one of :data:`gapjax.report.EXPERIMENTS`; the module
``experiments/<experiment>.py`` provides ``main(config, workdir) -> dict``.
Writes ``config.json`` before and ``summary.json`` after the run (the method
writes ``metrics.jsonl`` and ``figures/*.png``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from gapjax.config import apply_overrides, load_config
from gapjax.report import EXPERIMENTS, _jsonable
from gapjax.train import check_workdir


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
    (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=1, default=str))
    module = importlib.import_module(f"gapjax.experiments.{args.experiment}")
    summary = module.main(config, workdir)
    if not (workdir / "summary.json").exists() or summary:
        (workdir / "summary.json").write_text(json.dumps(_jsonable(summary or {}), indent=1))
    if not (workdir / "metrics.jsonl").exists():
        # Experiments without a step-wise training loop (closed forms, scans of
        # small fits) log their final scalar measurements as one row.
        row = {"step": 0, "split": "final", **_scalar_leaves(_jsonable(summary or {}))}
        (workdir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    print(f"run finished: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
