"""Benchmarks of gapjax.flow against an eager PyTorch implementation (same CPU).

    python benchmarks/bench_flow.py --out FILE.json [--repeats 20]

Measures (warm-up and compile excluded, block_until_ready, median of repeats):
  * a CFM training step (forward + backward + Adam) of the MLP velocity net;
  * an N-step FT-FM step (Euler through the unrolled solver, forward + backward
    + Adam) for N in {4, 8};
  each as steps/s for JAX (jit) and eager PyTorch, and their ratio;
  * peak temporary memory of the compiled FT-FM gradient with and without
    per-step ``jax.checkpoint`` as N grows (``compiled.memory_analysis()``).
torch is imported lazily; without it the torch fields read "not installed".
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import gapjax.flow as F
from gapjax.train import init_train_state, make_train_step

DIM, BATCH, HIDDEN, TIME_DIM = 64, 256, (256, 256, 256), 32


def _median_time(fn, repeats):
    fn()
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def jax_side(repeats):
    net = F.VelocityMLP(features=HIDDEN, time_dim=TIME_DIM)
    x1 = jax.random.normal(jax.random.key(0), (BATCH, DIM))
    x0 = jax.random.normal(jax.random.key(1), (BATCH, DIM))
    params = net.init(jax.random.key(2), x1[:2], 0.0)["params"]
    tx = optax.adam(1e-3)
    out = {}
    step = make_train_step(F.cfm_loss(net.apply), tx)
    fresh = lambda: jax.tree.map(jnp.copy, params)  # the steps donate their state
    box = [init_train_state(jax.random.key(3), lambda _: {"params": fresh()}, tx)]

    def run_cfm():
        box[0], m = step(box[0], {"x1": x1})
        jax.block_until_ready(m["loss"])

    out["cfm_step_s"] = _median_time(run_cfm, repeats)
    for n in (4, 8):
        step = make_train_step(F.ftfm_loss(net.apply, n_steps=n), tx)
        box = [init_train_state(jax.random.key(3),
                                lambda _: {"params": F.init_recon_params(fresh())}, tx)]

        def run_ft():
            box[0], m = step(box[0], {"x0": x0, "x1": x1})
            jax.block_until_ready(m["loss"])

        out[f"ftfm_N{n}_step_s"] = _median_time(run_ft, repeats)
    # memory of the FT-FM gradient with/without per-step checkpointing
    mem = {}
    p = F.init_recon_params(params)
    for n in (4, 16, 64):
        row = {}
        for ckpt in (False, True):
            loss = F.ftfm_loss(net.apply, n_steps=n, checkpoint=ckpt)
            g = jax.jit(jax.grad(lambda q: loss(q, {}, {"x0": x0, "x1": x1},
                                                jax.random.key(0))[0]))
            ma = g.lower(p).compile().memory_analysis()
            row["checkpoint" if ckpt else "plain"] = int(ma.temp_size_in_bytes) if ma else None
        mem[n] = row
    out["ftfm_grad_temp_bytes"] = mem
    return out


def torch_side(repeats):
    try:
        import torch
    except ImportError:
        return "not installed"
    torch.manual_seed(0)

    class TimeEmb(torch.nn.Module):
        def forward(self, t):
            half = TIME_DIM // 2
            freqs = torch.exp(torch.linspace(0.0, math.log(100.0), half))
            ang = t[:, None] * freqs[None]
            return torch.cat([ang.sin(), ang.cos()], -1)

    class VelocityMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            f0 = HIDDEN[0]
            self.temb = TimeEmb()
            self.e1, self.e2 = torch.nn.Linear(TIME_DIM, f0), torch.nn.Linear(f0, f0)
            self.inp = torch.nn.Linear(DIM, f0)
            self.hs = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(HIDDEN[:-1], HIDDEN[1:]))
            self.es = torch.nn.ModuleList(torch.nn.Linear(f0, b) for b in HIDDEN[1:])
            self.out = torch.nn.Linear(HIDDEN[-1], DIM)

        def forward(self, x, t):
            if t.dim() == 0:
                t = t.expand(x.shape[0])
            e = self.e2(torch.nn.functional.silu(self.e1(self.temb(t))))
            h = torch.nn.functional.silu(self.inp(x) + e)
            for lin, le in zip(self.hs, self.es):
                h = torch.nn.functional.silu(lin(h) + le(e))
            return self.out(h)

    net = VelocityMLP()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x1 = torch.randn(BATCH, DIM)
    x0 = torch.randn(BATCH, DIM)
    out = {"version": torch.__version__, "threads": torch.get_num_threads()}

    def cfm():
        z = torch.randn_like(x1)
        t = torch.rand(BATCH)
        xt = (1 - t[:, None]) * z + t[:, None] * x1
        loss = ((net(xt, t) - (x1 - z)) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    out["cfm_step_s"] = _median_time(cfm, repeats)
    for n in (4, 8):
        def ft():
            x = x0
            dt = 1.0 / n
            for i in range(n):
                x = x + dt * net(x, torch.tensor(i * dt))
            loss = 0.5 * ((x1 - x) ** 2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        out[f"ftfm_N{n}_step_s"] = _median_time(ft, repeats)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    res = {"machine": platform.processor() or platform.machine(), "jax": jax.__version__,
           "devices": str(jax.devices()), "batch": BATCH, "dim": DIM, "hidden": HIDDEN,
           "jax_side": jax_side(args.repeats), "torch_side": torch_side(args.repeats)}
    if isinstance(res["torch_side"], dict):
        res["speedup_jax_over_torch"] = {
            k: res["torch_side"][k] / res["jax_side"][k]
            for k in ("cfm_step_s", "ftfm_N4_step_s", "ftfm_N8_step_s")}
    else:
        res["torch"] = "not installed"
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
