"""Reproduction-report rows and figure helpers.

Every experiment module ``experiments/<name>.py`` exposes

    def run(out_dir: pathlib.Path, quick: bool = True) -> list[Claim]

where ``name`` is one of :data:`EXPERIMENTS` (the method subpackages). It writes
its figures under ``out_dir / "figures"`` (with :func:`save_figure`) and returns
one :class:`Claim` per paper claim. Targets are fixed in the experiment module
before anything runs; a miss is returned with ``passed=False``.
:mod:`gapjax.reproduce` collects the rows into ``report.md`` / ``report.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any

# Registered experiment names, in report order (= method subpackages).
EXPERIMENTS = ("ghost_bn", "flow", "scaling", "icl", "repri", "deup")


@dataclasses.dataclass(frozen=True)
class Claim:
    """One row of the report.

    Attributes:
      experiment: registered experiment name (e.g. ``"ghost_bn"``).
      claim: the paper claim in words.
      measured: what was measured (number or short string).
      target: the target, written before the run (e.g. ``"> 0.5"``).
      passed: whether ``measured`` meets ``target``.
      figure: path of the figure relative to the report directory, or None.
      details: extra JSON-serialisable numbers (per-seed values, etc.).
    """

    experiment: str
    claim: str
    measured: Any
    target: str
    passed: bool
    figure: str | None = None
    details: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["measured"] = _jsonable(self.measured)
        d["passed"] = bool(self.passed)
        d["details"] = _jsonable(self.details)
        return d


def _jsonable(x):
    """Converts numpy/jax scalars and arrays to plain Python for json."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def figures_dir(out_dir: pathlib.Path | str) -> pathlib.Path:
    """``out_dir/figures``, created if needed."""
    d = pathlib.Path(out_dir) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def save_figure(fig, out_dir: pathlib.Path | str, name: str) -> str:
    """Saves a matplotlib figure to ``out_dir/figures/<name>.png``.

    Returns the path relative to ``out_dir`` (what :class:`Claim.figure` holds).
    """
    import matplotlib.pyplot as plt

    path = figures_dir(out_dir) / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(path.relative_to(pathlib.Path(out_dir)))


def new_figure(*args, **kwargs):
    """``plt.subplots`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def _fmt(x) -> str:
    """Compact text for a measured value: 4 significant digits throughout."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in x.items()) + "}"
    return str(x)


def write_report(rows: list[Claim], out_dir: pathlib.Path | str,
                 header: str = "") -> tuple[pathlib.Path, pathlib.Path]:
    """Writes ``report.md`` and ``report.json`` into ``out_dir``."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "report.json"
    jpath.write_text(json.dumps([r.to_json() for r in rows], indent=1))
    lines = ["# gapjax reproduction report", ""]
    if header:
        lines += [header, ""]
    n_pass = sum(bool(r.passed) for r in rows)
    lines += [f"**{n_pass} / {len(rows)} claims PASS**", ""]
    lines += ["| experiment | claim | measured | target | result | figure |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        fig = f"[{pathlib.Path(r.figure).name}]({r.figure})" if r.figure else ""
        claim = r.claim.replace("|", "\\|")
        lines.append(
            f"| {r.experiment} | {claim} | {_fmt(r.measured)} | "
            f"{r.target.replace('|', '/')} | {'PASS' if r.passed else 'FAIL'} | {fig} |")
    figs = []
    for r in rows:
        if r.figure and r.figure not in figs:
            figs.append(r.figure)
    if figs:
        lines += ["", "## Figures", ""]
        lines += [f"![{f}]({f})" for f in figs]
    mpath = out / "report.md"
    mpath.write_text("\n".join(lines) + "\n")
    return mpath, jpath
