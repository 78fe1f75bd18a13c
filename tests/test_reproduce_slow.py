"""The main job end to end (slow: minutes per experiment; ``pytest -m slow``)."""

import json

import pytest

from gapjax import reproduce
from gapjax.report import EXPERIMENTS


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_quick_reproduction_writes_report_rows_with_figures(tmp_path, name):
    rc = reproduce.main(["--quick", "--out", str(tmp_path), "--only", name])
    assert rc == 0  # no experiment crashed (FAIL claims are results, not crashes)
    rows = json.loads((tmp_path / "report.json").read_text())
    assert rows and all(r["experiment"] == name for r in rows)
    for r in rows:
        assert isinstance(r["passed"], bool) and r["target"]
        if r["figure"]:
            assert (tmp_path / r["figure"]).is_file()
    assert "claims PASS" in (tmp_path / "report.md").read_text()
