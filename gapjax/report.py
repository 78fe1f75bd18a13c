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
      seeds: number of independent seeds behind ``measured`` (None: a
        deterministic quantity, e.g. a closed form or an exact quadrature).
      ci_low, ci_high: the 95% confidence interval of the compared quantity
        (for "A beats B" the paired difference A - B), or None.
      note: the measured cause of a miss, or what the row means; free text.
    """

    experiment: str
    claim: str
    measured: Any
    target: str
    passed: bool
    figure: str | None = None
    details: dict = dataclasses.field(default_factory=dict)
    seeds: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    note: str = ""

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["measured"] = _jsonable(self.measured)
        d["passed"] = bool(self.passed)
        d["details"] = _jsonable(self.details)
        for k in ("ci_low", "ci_high"):
            d[k] = None if d[k] is None else float(d[k])
        return d


@dataclasses.dataclass(frozen=True)
class Interval:
    """Mean of per-seed values with its two-sided confidence interval.

    Attributes:
      mean: sample mean of the values.
      low, high: the ``level`` t-interval of the mean (Student t with n - 1
        degrees of freedom); equal to ``mean`` when all values are equal.
      n: number of values (seeds).
      level: confidence level (default 0.95).
    """

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def excludes_zero(self, direction: str = ">") -> bool:
        """True if the whole interval lies above 0 (``">"``) or below 0 (``"<"``)."""
        if direction not in (">", "<"):
            raise ValueError(f"direction must be '>' or '<', got {direction!r}")
        return self.low > 0 if direction == ">" else self.high < 0

    def within(self, margin: float) -> bool:
        """Equivalence: the whole interval lies inside ``[-margin, margin]``."""
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        return -margin <= self.low and self.high <= margin

    def text(self, fmt: str = ".4g", scale: float = 1.0) -> str:
        """``"m [lo, hi] (n seeds)"`` with values multiplied by ``scale``."""
        return (f"{self.mean * scale:{fmt}} [{self.low * scale:{fmt}}, "
                f"{self.high * scale:{fmt}}] ({self.n} seeds)")


def mean_ci(values, level: float = 0.95) -> Interval:
    """Student-t confidence interval of the mean of ``values`` (shape ``(n,)``, n >= 2).

    For a paired comparison pass the per-seed differences ``a - b`` (seeds that
    share data/initialisation are paired); see :func:`paired_ci`.
    """
    import numpy as np
    from scipy import stats

    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size < 2:
        raise ValueError(f"values must hold at least 2 seeds for an interval, got {x.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"values must be finite, got {x.tolist()}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    m = float(x.mean())
    se = float(x.std(ddof=1) / np.sqrt(x.size))
    h = float(stats.t.ppf(0.5 + level / 2, x.size - 1)) * se
    return Interval(m, m - h, m + h, int(x.size), level)


def paired_ci(a, b, level: float = 0.95) -> Interval:
    """Interval of the mean paired difference ``a - b`` over seeds (shapes ``(n,)``)."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair seed for seed, got {a.size} and {b.size} values")
    return mean_ci(a - b, level)


def ci_fields(iv: Interval) -> dict:
    """``Claim`` keyword arguments ``seeds``, ``ci_low``, ``ci_high`` from an interval."""
    return dict(seeds=iv.n, ci_low=iv.low, ci_high=iv.high)


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
    lines += ["| experiment | claim | measured | 95% CI (seeds) | target | result | figure |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        fig = f"[{pathlib.Path(r.figure).name}]({r.figure})" if r.figure else ""
        claim = r.claim.replace("|", "\\|")
        ci = (f"[{_fmt(float(r.ci_low))}, {_fmt(float(r.ci_high))}]"
              if r.ci_low is not None else "")
        ci += f" ({r.seeds})" if r.seeds else ""
        lines.append(
            f"| {r.experiment} | {claim} | {_fmt(r.measured)} | {ci} | "
            f"{r.target.replace('|', '/')} | {'PASS' if r.passed else 'FAIL'} | {fig} |")
    notes = [(i, r) for i, r in enumerate(rows) if r.note]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{r.experiment}**: {r.claim.replace('|', '/')}: {r.note}"
                  for _, r in notes]
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
