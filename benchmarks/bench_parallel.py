"""Train-step throughput of the same data-parallel step on 1 vs 8 faked CPU devices.

    python -m benchmarks.bench_parallel --out FILE.json [--size full|quick|tiny]

Both meshes are measured side by side in one process (8 host devices faked with
XLA_FLAGS), alternating round by round (``benchmarks._harness.compare``). On a
CPU the 8 "devices" share the same cores, so the ratio shows
the partitioning overhead, not a speed-up; on 8 real accelerators the same code
is the data-parallel run.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import jax  # noqa: E402

from benchmarks import _harness as H  # noqa: E402
from digits_task import make_task  # noqa: E402
from gapjax import parallel  # noqa: E402
from gapjax.train import init_train_state, make_train_step  # noqa: E402

SIZES = {"full": dict(batch_size=256, iters=50, rounds=5),
         "quick": dict(batch_size=256, iters=20, rounds=3),
         "tiny": dict(batch_size=16, iters=2, rounds=2)}


def stepper(num_devices, batch_size, iters):
    """Closure running ``iters`` data-parallel steps on ``num_devices``."""
    task = make_task(batch_size=batch_size)
    mesh = parallel.make_mesh(num_devices)
    state = parallel.replicate(init_train_state(jax.random.key(0), task.init_fn, task.tx), mesh)
    step = make_train_step(task.loss_fn, task.tx, mesh=mesh)
    batches = [parallel.shard_batch(task.batch_fn(jax.random.key(1), s), mesh) for s in range(4)]
    box = [state]

    def run():
        st = box[0]
        for i in range(iters):
            st, m = step(st, batches[i % 4])
            jax.block_until_ready(m)  # one program in flight: faked CPU devices share a thread pool
        jax.block_until_ready(st)
        box[0] = st
    return run


def run(size: str = "full", **overrides) -> dict:
    load_before = H.load_1min()
    cfg = {**SIZES[H.check_size(size)], **overrides}
    res = {"benchmark": "parallel", "size": size, "setting": cfg,
           "what": "digits MLP+BN train step, data-parallel, 1 vs 8 devices"}
    if jax.device_count() < 8:
        res["skipped"] = f"needs 8 devices, {jax.device_count()} present"
    else:
        sides = {f"{n}_devices": stepper(n, cfg["batch_size"], cfg["iters"]) for n in (1, 8)}
        r = H.compare(sides, rounds=cfg["rounds"], baseline="1_devices")
        r["steps_per_s"] = {k: cfg["iters"] / v for k, v in r["median_s"].items()}
        res.update(r)
    res["environment"] = H.environment(load_before)
    return res


def main():
    H.reexec_with_huge_pages()   # as python -m gapjax.run (GAPJAX_HUGE_PAGES=0: off)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--size", default="full", choices=H.SIZES)
    ap.add_argument("--rounds", type=int)
    a = ap.parse_args()
    H.write(run(a.size, **({"rounds": a.rounds} if a.rounds else {})), a.out)


if __name__ == "__main__":
    main()
