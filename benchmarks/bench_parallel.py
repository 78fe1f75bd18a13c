"""Train-step throughput of the same data-parallel step on 1 vs 8 faked CPU devices.

    python benchmarks/bench_parallel.py --out bench_parallel.json

Both meshes are measured side by side in one process (8 host devices faked with
XLA_FLAGS). On a CPU the 8 "devices" share the same cores, so the ratio shows
the partitioning overhead, not a speed-up; on 8 real accelerators the same code
is the data-parallel run.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from digits_task import make_task  # noqa: E402
from gapjax import parallel  # noqa: E402
from gapjax.train import init_train_state, make_train_step  # noqa: E402


def steps_per_second(num_devices, batch_size, iters=50, repeats=5):
    task = make_task(batch_size=batch_size)
    mesh = parallel.make_mesh(num_devices)
    state = parallel.replicate(init_train_state(jax.random.key(0), task.init_fn, task.tx), mesh)
    step = make_train_step(task.loss_fn, task.tx, mesh=mesh)
    batches = [parallel.shard_batch(task.batch_fn(jax.random.key(1), s), mesh) for s in range(4)]
    state, m = step(state, batches[0])  # compile
    jax.block_until_ready(m)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(iters):
            state, m = step(state, batches[i % 4])
            jax.block_until_ready(m)  # one program in flight: faked CPU devices share a thread pool
        jax.block_until_ready((state, m))
        times.append((time.perf_counter() - t0) / iters)
    return 1.0 / float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench_parallel.json")
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    one = steps_per_second(1, args.batch_size)
    eight = steps_per_second(8, args.batch_size)
    res = {"benchmark": "digits MLP+BN train step, data-parallel", "batch_size": args.batch_size,
           "backend": jax.default_backend(), "machine": platform.machine(),
           "cpu_count": os.cpu_count(), "steps_per_s_1_device": one,
           "steps_per_s_8_devices": eight, "ratio_8_over_1": eight / one}
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
