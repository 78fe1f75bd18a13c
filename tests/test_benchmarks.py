"""``python -m benchmarks.run_all --tiny``: every benchmark runs and lands in one JSON.

Smoke sizes only (numbers meaningless); torch-dependent sides are skipped when
torch is absent (CI), and the harness's alternation and load fields are checked.
"""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:          # `benchmarks` is a folder of the repository
    sys.path.insert(0, str(ROOT))


def test_run_all_tiny_writes_one_json(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--out", str(tmp_path),
                           "--tiny", "--jobs", "2"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "benchmarks.json").read_text())
    assert res["size"] == "tiny" and res["failed"] == []
    from benchmarks.run_all import BENCHMARKS
    assert set(res["benchmarks"]) == set(BENCHMARKS)
    for name, r in res["benchmarks"].items():
        env = r["environment"]
        assert {"load_1min_before", "load_1min_after", "reliable"} <= set(env), name
        # The flag follows the recorded load (threshold 1.0).
        assert env["reliable"] == (env["load_1min_before"] <= 1.0), name
    icl = res["benchmarks"]["icl"]
    # every benchmark re-executed itself with huge pages where the machine has them
    from gapjax._runtime import huge_pages_active, huge_pages_env
    want = huge_pages_active(huge_pages_env())   # None: this environment as it is
    assert all(r["environment"]["huge_pages"] == want for r in res["benchmarks"].values())
    assert all(r["environment"]["minor_page_faults"] > 0 for r in res["benchmarks"].values())
    case = icl["cases"][0]
    assert len(case["rounds"]) == case["setting"]["rounds"] and "jax" in case["median_s"]
    repri = res["benchmarks"]["repri"]
    assert {(r["shots"], r["case"]) for r in repri["results"]} == {(1, "tiny"), (5, "tiny")}


def test_compare_alternates_and_pairs():
    from benchmarks import _harness as H
    calls = []
    sides = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    r = H.compare(sides, rounds=3, baseline="b", warmup=1)
    # warm-up a b, then rounds a b | b a | a b: each side's position alternates.
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    rr = r["ratio_over_b"]["a"]["rounds"]
    assert len(rr) == 3 and all(x == row["b"] / row["a"] for x, row in zip(rr, r["rounds"]))
