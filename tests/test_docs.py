"""The docs hooks read the README markers and committed reports, never copies."""

import importlib.util
import json
import pathlib

import pytest

pytest.importorskip("mkdocs")
ROOT = pathlib.Path(__file__).resolve().parent.parent


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_quickstart_sections_are_the_commands():
    hooks = _hooks()
    for name, needle in (("quickstart:main", "gapjax.reproduce --quick"),
                         ("quickstart:tests", "pytest")):
        text = hooks.readme_section(name)
        assert text.startswith("```bash") and text.endswith("```") and needle in text


def test_missing_readme_marker_fails_the_build(tmp_path):
    from mkdocs.exceptions import PluginError

    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(PluginError, match="quickstart:main"):
        _hooks().readme_section("quickstart:main", readme)


def test_claims_table_reads_rows_and_degrades_without_a_report(tmp_path):
    hooks = _hooks()
    quick, full = tmp_path / "quick.json", tmp_path / "full.json"
    reports = (("quick", quick), ("full", full))
    assert "No committed quick report yet" in hooks.claims_table("flow", reports)
    quick.write_text(json.dumps([
        {"experiment": "flow", "claim": "a | b", "measured": 0.123456, "target": "< 1",
         "passed": True, "ci_low": 0.1, "ci_high": 0.2, "seeds": 5},
        {"experiment": "flow", "claim": "c", "measured": "x", "target": "y",
         "passed": False, "note": "measured cause"},
        {"experiment": "icl", "claim": "other", "measured": 1, "target": "", "passed": True},
    ]))
    table = hooks.claims_table("flow", reports)
    assert "1/2 PASS" in table and "**FAIL**" in table and "measured cause" in table
    assert "a \\| b" in table and "0.1235" in table and "[0.1, 0.2]" in table
    assert "other" not in table and "Full report" not in table  # no full report: no table
    assert "has no rows for `repri`" in hooks.claims_table("repri", reports)
    # a folder of per-experiment full reports (the full presets run one at a time)
    full_dir = tmp_path / "full"
    for name, passed in (("flow", False), ("deup", True)):
        (full_dir / name).mkdir(parents=True)
        (full_dir / name / "report.json").write_text(json.dumps([
            {"experiment": name, "claim": f"{name} claim", "measured": 1.0, "target": "",
             "passed": passed}]))
    reports = (("quick", quick), ("full", full_dir))
    table = hooks.claims_table("flow", reports)
    assert "Full report" in table and "0/1 PASS" in table and "deup claim" not in table
    summary = hooks.summary_table(reports)
    assert "1/1 PASS" in summary and "0/1 PASS" in summary


def test_api_block_lists_the_runtime_all():
    import gapjax.deup

    block = _hooks().api_block("gapjax.deup")
    listed = [line.strip()[2:] for line in block.splitlines() if line.strip().startswith("- ")]
    assert listed == list(gapjax.deup.__all__)
