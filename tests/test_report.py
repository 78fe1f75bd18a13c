"""Reproduction report: rows, files, crash handling, CLI checks."""

import json
import sys
import types

import pytest

from gapjax import reproduce
from gapjax.report import Claim, new_figure, save_figure, write_report


def test_write_report_has_every_row_and_the_json_fields(tmp_path):
    fig, ax = new_figure()
    ax.plot([0, 1], [1, 0])
    rel = save_figure(fig, tmp_path, "curve")
    rows = [Claim("ghost_bn", "gap closes", 0.12, "< 0.5", True, rel),
            Claim("flow", "error | drops", float("nan"), "> 0", False)]
    md, js = write_report(rows, tmp_path, "hdr")
    text = md.read_text()
    assert "1 / 2 claims PASS" in text and "| ghost_bn | gap closes | 0.12 | < 0.5 | PASS |" in text
    assert "FAIL" in text and "error \\| drops" in text and "![figures/curve.png]" in text
    data = json.loads(js.read_text())
    assert [set(d) >= {"experiment", "claim", "measured", "target", "passed"} for d in data] == [True, True]
    assert data[1]["measured"] == "nan" and (tmp_path / rel).is_file()


def test_a_crashing_experiment_is_one_fail_row_and_the_rest_still_run(tmp_path, monkeypatch):
    good = types.ModuleType("experiments.good")
    good.run = lambda out, quick=True: [Claim("good", "c", 1.0, "> 0", True)]
    bad = types.ModuleType("experiments.bad")

    def boom(out, quick=True):
        raise RuntimeError("diverged")

    bad.run = boom
    monkeypatch.setitem(sys.modules, "experiments.good", good)
    monkeypatch.setitem(sys.modules, "experiments.bad", bad)
    rows, timings, crashed = reproduce.run_experiments(["bad", "good"], tmp_path, True)
    assert crashed and [r.passed for r in rows] == [False, True]
    assert "diverged" in rows[0].measured and set(timings) == {"bad", "good"}


def test_cli_rejects_unknown_names_and_missing_parent(tmp_path):
    with pytest.raises(SystemExit):
        reproduce.main(["--quick", "--out", str(tmp_path / "o"), "--only", "nope"])
    with pytest.raises(SystemExit):
        reproduce.main(["--quick", "--out", str(tmp_path / "a" / "b")])
