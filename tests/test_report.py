"""Reproduction report: rows, files, crash handling, CLI checks."""

import json
import sys
import types

import numpy as np
import pytest

from gapjax import reproduce
from gapjax.report import (Claim, ci_fields, mean_ci, new_figure, paired_ci, save_figure,
                           write_report)


def test_write_report_has_every_row_and_the_json_fields(tmp_path):
    fig, ax = new_figure()
    ax.plot([0, 1], [1, 0])
    rel = save_figure(fig, tmp_path, "curve")
    iv = paired_ci([1.0, 2.0, 3.0], [0.5, 0.5, 0.5])
    rows = [Claim("ghost_bn", "gap closes", 0.12, "< 0.5", True, rel),
            Claim("flow", "error | drops", float("nan"), "> 0", False,
                  note="diverged at step 3", **ci_fields(iv))]
    md, js = write_report(rows, tmp_path, "hdr")
    text = md.read_text()
    assert "1 / 2 claims PASS" in text and "| ghost_bn | gap closes | 0.12 |  | < 0.5 | PASS |" in text
    assert "FAIL" in text and "error \\| drops" in text and "![figures/curve.png]" in text
    assert f"[{iv.low:.4g}, {iv.high:.4g}] (3)" in text and "diverged at step 3" in text
    data = json.loads(js.read_text())
    assert [set(d) >= {"experiment", "claim", "measured", "target", "passed", "seeds",
                       "ci_low", "ci_high", "note"} for d in data] == [True, True]
    assert data[1]["measured"] == "nan" and (tmp_path / rel).is_file()
    assert data[1]["seeds"] == 3 and data[1]["ci_low"] == pytest.approx(iv.low)
    assert data[0]["seeds"] is None and data[0]["ci_low"] is None


def test_mean_ci_matches_the_t_table_and_decides_direction():
    # n = 5, values 1..5: mean 3, s = sqrt(2.5), t_{0.975, 4} = 2.776445 (printed tables).
    iv = mean_ci([1, 2, 3, 4, 5])
    half = 2.776445105 * np.sqrt(2.5 / 5)
    assert iv.mean == 3 and iv.low == pytest.approx(3 - half, rel=1e-8)
    assert iv.high == pytest.approx(3 + half, rel=1e-8) and iv.n == 5
    assert iv.excludes_zero(">") and not iv.excludes_zero("<")
    assert not iv.within(4.9) and iv.within(5.0)
    d = paired_ci([1.0, 2.0, 3.0], [1.5, 1.0, 3.5])  # differences -0.5, 1, -0.5
    assert d.low < 0 < d.high and not d.excludes_zero(">") and not d.excludes_zero("<")


def test_mean_ci_covers_the_true_mean_95_percent_of_the_time():
    # 4000 Gaussian samples of 5 seeds: coverage is Binomial(4000, 0.95), sd 0.0034;
    # 0.95 +- 0.015 is > 4 sd wide.
    rng = np.random.default_rng(0)
    samples = rng.normal(1.0, 2.0, size=(4000, 5))
    cover = np.mean([(iv := mean_ci(s)).low <= 1.0 <= iv.high for s in samples])
    assert abs(cover - 0.95) < 0.015


@pytest.mark.parametrize("bad, match", [
    (dict(values=[1.0]), "at least 2"),
    (dict(values=[1.0, float("nan")]), "finite"),
    (dict(values=[1.0, 2.0], level=1.5), "level"),
])
def test_mean_ci_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        mean_ci(**bad)


def test_paired_ci_rejects_unpaired_lengths():
    with pytest.raises(ValueError, match="pair"):
        paired_ci([1.0, 2.0, 3.0], [1.0, 2.0])


def test_a_crashing_experiment_is_one_fail_row_and_the_rest_still_run(tmp_path, monkeypatch):
    good = types.ModuleType("gapjax.experiments.good")
    good.run = lambda out, quick=True: [Claim("good", "c", 1.0, "> 0", True)]
    bad = types.ModuleType("gapjax.experiments.bad")

    def boom(out, quick=True):
        raise RuntimeError("diverged")

    bad.run = boom
    monkeypatch.setitem(sys.modules, "gapjax.experiments.good", good)
    monkeypatch.setitem(sys.modules, "gapjax.experiments.bad", bad)
    rows, timings, crashed = reproduce.run_experiments(["bad", "good"], tmp_path, True)
    assert crashed and [r.passed for r in rows] == [False, True]
    assert "diverged" in rows[0].measured and set(timings) == {"bad", "good"}


def test_cli_rejects_unknown_names_and_an_out_that_is_a_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--quick", "--out", str(tmp_path / "o"), "--only", "nope"])
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit):
        reproduce.main(["--quick", "--out", str(tmp_path / "f")])
    assert "exists and is not a folder" in capsys.readouterr().err


def test_cli_creates_missing_parents_of_out(tmp_path, monkeypatch):
    good = types.ModuleType("gapjax.experiments.scaling")
    good.run = lambda out, quick=True: [Claim("scaling", "c", 1.0, "> 0", True)]
    monkeypatch.setitem(sys.modules, "gapjax.experiments.scaling", good)
    out = tmp_path / "a" / "b" / "quick"
    assert reproduce.main(["--quick", "--out", str(out), "--only", "scaling"]) == 0
    assert (out / "report.md").is_file() and (out / "report.json").is_file()
    run = json.loads((out / "run.json").read_text())  # how to make the report again
    assert run["command"] == f"python -m gapjax.reproduce --quick --out {out} --only scaling"
    assert run["cpus"] >= 1 and run["wall_s"] >= 0 and run["started"] <= run["ended"]


def test_a_preempted_experiment_exits_75_without_a_report(tmp_path, monkeypatch):
    from gapjax.train import Preempted

    mod = types.ModuleType("gapjax.experiments.scaling")

    def stopped(out, quick=True):
        raise Preempted("preempted at step 3, resume with --resume")

    mod.run = stopped
    monkeypatch.setitem(sys.modules, "gapjax.experiments.scaling", mod)
    assert reproduce.main(["--quick", "--out", str(tmp_path / "q"), "--only", "scaling"]) == 75
    assert not (tmp_path / "q" / "report.md").exists()
