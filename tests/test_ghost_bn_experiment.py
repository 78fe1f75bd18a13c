"""The digits experiment's wiring on a tiny config: the regimes' update counts
and learning rates, main()'s JSON and figures, the claim rows."""

import json
import math

import numpy as np

from gapjax.configs.ghost_bn import get_config
from gapjax.experiments import ghost_bn as exp


def _tiny():
    c = get_config("quick")
    c.seeds, c.epochs, c.small_batch, c.large_batch = 2, 2, 16, 64
    c.features, c.num_distance_points = (16,), 12
    return c


def test_regimes_follow_the_recipe():
    cfg = get_config("quick")
    regs = exp._regimes(cfg)
    k = cfg.large_batch / cfg.small_batch
    sb = regs["SB"][0]
    n = 1347
    from gapjax.ghost_bn import total_updates

    # 1344 = 42 * 32 = 3 * 448 examples used per epoch: RA matches SB exactly.
    assert total_updates(regs["LB+sqrtLR+GBN+RA"][0], n) == total_updates(sb, n) == 420
    assert total_updates(regs["LB"][0], n) == 30
    assert regs["LB"][0].lr == sb.lr
    for name in ("LB+sqrtLR", "LB+sqrtLR+GBN", "LB+sqrtLR+GBN+RA"):
        np.testing.assert_allclose([v for _, v in regs[name][0].lr],
                                   [v * math.sqrt(k) for _, v in sb.lr], rtol=1e-12)
    assert [g for _, g in regs.values()] == [None, None, None, 32, 32]
    assert all(r.clip_norm == 5.0 and r.momentum == 0.9 and r.weight_decay == 1e-4
               for r, _ in regs.values())


def test_main_writes_json_figures_and_claims(tmp_path):
    summary = exp.main(_tiny(), tmp_path)
    data = json.loads((tmp_path / "ghost_bn.json").read_text())
    assert set(data["runs"]) == set(exp.RUNS)
    ups = {k: v["updates"] for k, v in data["runs"].items()}
    assert ups["SB"] == ups["LB+sqrtLR+GBN+RA"] == 168 and ups["LB"] == 42
    for r in data["runs"].values():
        acc = np.asarray(r["test_acc"])
        assert acc.shape == (2,) and np.all((acc >= 0) & (acc <= 1))
    assert len(summary["claims"]) == 6
    for c in summary["claims"]:
        assert (tmp_path / c["figure"]).exists() and isinstance(c["passed"], bool)
        # Every row is a paired 2-seed comparison with its interval; a miss says why.
        assert c["seeds"] == 2 and c["ci_low"] <= c["ci_high"]
        assert c["passed"] or c["note"]


def test_runs_go_through_the_shared_loop_and_resume(tmp_path):
    """Each run writes metrics.jsonl + a checkpoint; a resumed main() restores the
    finished runs instead of retraining and reproduces the same accuracies."""
    from gapjax import checkpoint

    cfg = _tiny()
    first = exp.main(cfg, tmp_path)
    for name, r in first["runs"].items():
        rd = tmp_path / "ghost_bn_runs" / "runs" / name.replace("+", "_")
        lines = (rd / "metrics.jsonl").read_text().splitlines()
        assert len([ln for ln in lines if '"train"' in ln]) == r["updates"]
        assert checkpoint.all_steps(rd / "checkpoints") == [r["updates"]]
    cfg.resume = True
    again = exp.main(cfg, tmp_path)
    for name in exp.RUNS:
        np.testing.assert_array_equal(first["runs"][name]["test_acc"],
                                      again["runs"][name]["test_acc"])


def test_budget_variant_reports_the_gap_claims_again_from_its_own_runs(tmp_path):
    """The fixed-epoch-budget variant trains the five runs again under its own
    epochs and base key. Wiring check by invariance: with the main run's epochs
    and seed it reproduces the main accuracies exactly; with another seed it
    does not."""
    cfg = _tiny()
    cfg.budget_variant_epochs, cfg.variant_seed = cfg.epochs, cfg.seed
    same = exp.main(cfg, tmp_path / "same")
    assert len(same["claims"]) == 6 + 5
    labelled = [c for c in same["claims"] if c["claim"].startswith("[2-epoch budget] ")]
    assert len(labelled) == 5 and not any("log t" in c["claim"] for c in labelled)
    assert (tmp_path / "same" / labelled[0]["figure"]).exists()
    assert labelled[0]["figure"] != same["claims"][0]["figure"]
    for name in exp.RUNS:
        np.testing.assert_array_equal(same["budget_variant"]["runs"][name]["test_acc"],
                                      same["runs"][name]["test_acc"])
    cfg.budget_variant_epochs, cfg.variant_seed = 1, cfg.seed + 1
    other = exp.main(cfg, tmp_path / "other")
    v = other["budget_variant"]
    assert v["epochs"] == 1 and v["seed"] == cfg.seed + 1
    assert v["runs"]["SB"]["updates"] == 1347 // 16 and v["runs"]["LB"]["updates"] == 1344 // 64
    assert not np.array_equal(v["runs"]["SB"]["final_train_loss"],
                              other["runs"]["SB"]["final_train_loss"])
