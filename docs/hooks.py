"""mkdocs hooks: content read from the repository at build time, never copied.

Placeholders (HTML comments, so a page still reads well unrendered):

* ``<!-- readme:NAME -->`` -- the part of ``README.md`` between
  ``<!-- NAME -->`` and ``<!-- /NAME -->`` (e.g. ``quickstart:main``). A
  missing marker fails the build: the docs must never lose a Quick start
  command silently.
* ``<!-- claims:EXPERIMENT -->`` -- the reproduction claims of one experiment
  (``ghost_bn``, ``flow``, ...) as a table, from the committed reports
  ``experiments/results/quick/report.json`` and, if present,
  ``experiments/results/full/*/report.json`` (one per full preset run); a
  clear "no committed report yet" line when a report is missing.
* ``<!-- claims:summary -->`` -- PASS counts per experiment and report.
* ``<!-- api:MODULE -->`` -- the mkdocstrings block of ``MODULE`` listing
  exactly the names of its runtime ``__all__`` (griffe cannot read an
  ``__all__`` built by code, e.g. ``gapjax.deup``'s); modules without
  ``__all__`` show their names that do not start with an underscore.

A report is a JSON list of objects with ``experiment, claim, measured, target,
passed`` and optionally ``figure, details, seeds, ci_low, ci_high, note``.
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import subprocess

from mkdocs.exceptions import PluginError

ROOT = pathlib.Path(__file__).resolve().parent.parent
REPORTS = (("quick", ROOT / "experiments/results/quick/report.json"),
           ("full", ROOT / "experiments/results/full"))
_README = re.compile(r"<!--\s*readme:([\w:.-]+)\s*-->")
_CLAIMS = re.compile(r"<!--\s*claims:([\w]+)\s*-->")
_API = re.compile(r"<!--\s*api:([\w.]+)\s*-->")


def readme_section(name: str, readme: pathlib.Path = ROOT / "README.md") -> str:
    """Text of ``readme`` between ``<!-- name -->`` and ``<!-- /name -->``."""
    text = readme.read_text()
    m = re.search(rf"<!--\s*{re.escape(name)}\s*-->\n?(.*?)<!--\s*/{re.escape(name)}\s*-->",
                  text, re.S)
    if m is None:
        raise PluginError(f"README.md has no section <!-- {name} --> ... <!-- /{name} -->")
    return m.group(1).strip("\n")


def load_report(path: pathlib.Path):
    """The rows of a report, or None when it is missing.

    ``path`` is a ``report.json`` or a folder of per-experiment reports
    (``<folder>/report.json`` and ``<folder>/*/report.json``, rows concatenated:
    the full presets run one experiment at a time).
    """
    if path.is_dir():
        parts = [load_report(p) for p in [path / "report.json",
                                          *sorted(path.glob("*/report.json"))]]
        parts = [rows for rows in parts if rows is not None]
        return [r for rows in parts for r in rows] if parts else None
    if not path.is_file():
        return None
    try:
        rows = json.loads(path.read_text())
    except ValueError as e:
        raise PluginError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(rows, list):
        raise PluginError(f"{path} must hold a JSON list of claim objects")
    return rows


def _fmt(x) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    if isinstance(x, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in x.items())
    return str(x)


def _cell(x) -> str:
    return _fmt(x).replace("|", "\\|").replace("\n", " ")


def _rel(path: pathlib.Path):
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _commit_date(path: pathlib.Path) -> str:
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cs %h", "--", str(path)],
                             cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return f", committed {out.strip()}" if out.strip() else ", not committed yet"


def claims_table(experiment: str, reports=REPORTS) -> str:
    """Markdown: one table per available report with the experiment's rows."""
    parts = []
    for mode, path in reports:
        rows = load_report(path)
        rel = _rel(path)
        if rows is None:
            if mode == "quick":
                parts.append(f"*No committed {mode} report yet* (`{rel}` is missing): "
                             f"run `python -m gapjax.reproduce --quick --only {experiment}`.")
            continue
        rows = [r for r in rows if r.get("experiment") == experiment]
        if not rows:
            parts.append(f"*The {mode} report `{rel}` has no rows for `{experiment}`.*")
            continue
        has_ci = any("ci_low" in r or "ci_high" in r for r in rows)
        has_seeds = any("seeds" in r for r in rows)
        head = ["Claim", "Measured"] + (["95% CI"] if has_ci else []) + \
            (["Seeds"] if has_seeds else []) + ["Target", "Verdict", "Note"]
        lines = [f"**{mode.capitalize()} report** (`{rel}`{_commit_date(path)}): "
                 f"{sum(bool(r.get('passed')) for r in rows)}/{len(rows)} PASS",
                 "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [_cell(r.get("claim", "")), _cell(r.get("measured", ""))]
            if has_ci:
                lo, hi = r.get("ci_low"), r.get("ci_high")
                cells.append("" if lo is None and hi is None else
                             f"[{_cell(lo)}, {_cell(hi)}]")
            if has_seeds:
                cells.append(_cell(r.get("seeds", "")))
            note = r.get("note") or (f"figure `{r['figure']}`" if r.get("figure") else "")
            cells += [_cell(r.get("target", "")),
                      "PASS" if r.get("passed") else "**FAIL**", _cell(note)]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def summary_table(reports=REPORTS) -> str:
    """Markdown: PASS / total per experiment for each available report."""
    from gapjax.report import EXPERIMENTS

    loaded = [(mode, path, load_report(path)) for mode, path in reports]
    avail = [(m, p, r) for m, p, r in loaded if r is not None]
    if not avail:
        return ("*No committed report yet* (`experiments/results/quick/report.json` is "
                "missing): run `python -m gapjax.reproduce --quick --out out/quick`.")
    head = ["Method"] + [f"{m} report" for m, _, _ in avail]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in EXPERIMENTS:
        cells = [f"[`{name}`](methods/{name}.md)"]
        for _, _, rows in avail:
            mine = [r for r in rows if r.get("experiment") == name]
            cells.append(f"{sum(bool(r.get('passed')) for r in mine)}/{len(mine)} PASS"
                         if mine else "not run")
        lines.append("| " + " | ".join(cells) + " |")
    src = ", ".join(f"`{_rel(p)}`{_commit_date(p)}" for _, p, _ in avail)
    return "\n".join(lines) + f"\n\nFrom {src}."


def api_block(module: str) -> str:
    """A ``::: module`` block whose members are the module's ``__all__``."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise PluginError(f"cannot import {module} for its API page: {e}") from e
    names = getattr(mod, "__all__", None)
    opts = ["    options:", "      show_root_heading: false"]
    if names is None:
        opts.append("      filters: public")
    else:
        opts.append("      members:")
        opts += [f"        - {n}" for n in names]
    return "\n".join([f"::: {module}"] + opts) + "\n"


def on_page_markdown(markdown, page=None, config=None, files=None, **kwargs):
    markdown = _README.sub(lambda m: readme_section(m.group(1)), markdown)
    markdown = _API.sub(lambda m: api_block(m.group(1)), markdown)

    def claims(m):
        name = m.group(1)
        return summary_table() if name == "summary" else claims_table(name)

    return _CLAIMS.sub(claims, markdown)
