"""The full ghost_bn preset's SB initial phase (first 2016 updates at lr 0.1):
same trajectory as the full run (batch order = f(seed, step)), no drops."""
import sys, json, time, pathlib; sys.path.insert(0, ".")
import numpy as np
from gapjax.configs.ghost_bn import get_config
from gapjax.experiments import ghost_bn as E
from gapjax.data import load_digits
from gapjax.ghost_bn import Regime
c = get_config("full")
phase_epochs = c.epochs * c.lr_drop_fractions[0]          # 24 epochs = 2016 updates
reg = Regime(batch_size=c.small_batch, epochs=phase_epochs, lr=((0.0, c.lr),),
             momentum=c.momentum, weight_decay=c.weight_decay, clip_norm=c.clip_norm)
tr, te = load_digits(flat=True, test_fraction=c.test_fraction, seed=c.data_seed)
t0 = time.perf_counter()
c.num_distance_points = 400
res = E.train_run(c, reg, None, ((tr.x, tr.y), (te.x, te.y)), pathlib.Path(sys.argv[1]))
# The full run's fit points: _log_steps(10080, 400) restricted to t < 2016.
t_full = E._log_steps(10080, 400); t_full = t_full[t_full < 2016]
rows = [json.loads(l) for l in (pathlib.Path(sys.argv[1]) / "metrics.jsonl").read_text().splitlines() if l.strip()]
rows = {r["step"]: r for r in rows if r["split"] == "train"}
d = np.asarray([rows[int(t)]["dist/Dense_0"] for t in t_full]).T   # (seeds, T)
from gapjax.ghost_bn import log_fit, correlation
from gapjax.report import mean_ci
m = log_fit(t_full, d.mean(0)); m["r_sqrt"] = correlation(np.sqrt(t_full), d.mean(0))
per = [log_fit(t_full, x)["r"] - correlation(np.sqrt(t_full), x) for x in d]
print("updates", res["updates"], "points", len(t_full), "seconds", time.perf_counter() - t0)
print("seed-mean fit", m)
print("per-seed r_log - r_sqrt", mean_ci(per).text(".4f"))
for lo, hi in ((1, 84), (84, 336), (336, 2016), (1, 336)):
    sel = (t_full >= lo) & (t_full < hi)
    if sel.sum() >= 3:
        print(lo, hi, sel.sum(), "r_log", round(log_fit(t_full[sel], d.mean(0)[sel])["r"], 4),
              "r_sqrt", round(correlation(np.sqrt(t_full[sel]), d.mean(0)[sel]), 4))
