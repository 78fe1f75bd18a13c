"""Benchmarks of gapjax.flow against an eager PyTorch implementation (same CPU).

    python -m benchmarks.bench_flow --out FILE.json [--size full|quick|tiny] [--rounds R]

Measures (warm-up and compile excluded, block_until_ready), the JAX and torch
sides alternating round by round (``benchmarks._harness.compare``: each round's
paired ratio and the median, load average before/after):
  * a CFM training step (forward + backward + Adam) of the MLP velocity net;
  * an N-step FT-FM step (Euler through the unrolled solver, forward + backward
    + Adam) for N in {4, 8};
  * peak temporary memory of the compiled FT-FM gradient with and without
    per-step ``jax.checkpoint`` as N grows (``compiled.memory_analysis()``).
torch is imported lazily; without it only the JAX side is timed.
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import optax

import gapjax.flow as F
from benchmarks import _harness as H
from gapjax.train import init_train_state, make_train_step

TIME_DIM = 32
SIZES = {
    "full": dict(batch=256, dim=64, hidden=(256, 256, 256), ftfm_steps=(4, 8),
                 memory_steps=(4, 16, 64), rounds=20),
    "quick": dict(batch=256, dim=64, hidden=(256, 256, 256), ftfm_steps=(4,),
                  memory_steps=(4, 16), rounds=5),
    "tiny": dict(batch=8, dim=4, hidden=(16, 16), ftfm_steps=(2,), memory_steps=(2,),
                 rounds=2),
}


def jax_sides(batch, dim, hidden, ftfm_steps):
    """name -> closure running one JAX train step to completion."""
    net = F.VelocityMLP(features=tuple(hidden), time_dim=TIME_DIM)
    x1 = jax.random.normal(jax.random.key(0), (batch, dim))
    x0 = jax.random.normal(jax.random.key(1), (batch, dim))
    params = net.init(jax.random.key(2), x1[:2], 0.0)["params"]
    tx = optax.adam(1e-3)
    fresh = lambda: jax.tree.map(jnp.copy, params)  # the steps donate their state
    sides = {}

    def stepper(loss, init, batch_):
        step = make_train_step(loss, tx)
        box = [init_train_state(jax.random.key(3), init, tx)]

        def run():
            box[0], m = step(box[0], batch_)
            jax.block_until_ready(m["loss"])
        return run

    sides["cfm"] = stepper(F.cfm_loss(net.apply), lambda _: {"params": fresh()}, {"x1": x1})
    for n in ftfm_steps:
        sides[f"ftfm_N{n}"] = stepper(F.ftfm_loss(net.apply, n_steps=n),
                                      lambda _: {"params": F.init_recon_params(fresh())},
                                      {"x0": x0, "x1": x1})
    return sides, (net, params, x0, x1)


def memory(net, params, x0, x1, memory_steps):
    """Temp bytes of the compiled FT-FM gradient, plain vs per-step checkpoint."""
    mem = {}
    p = F.init_recon_params(params)
    for n in memory_steps:
        row = {}
        for ckpt in (False, True):
            loss = F.ftfm_loss(net.apply, n_steps=n, checkpoint=ckpt)
            g = jax.jit(jax.grad(lambda q: loss(q, {}, {"x0": x0, "x1": x1},
                                                jax.random.key(0))[0]))
            ma = g.lower(p).compile().memory_analysis()
            row["checkpoint" if ckpt else "plain"] = int(ma.temp_size_in_bytes) if ma else None
        mem[str(n)] = row
    return mem


def torch_sides(torch, batch, dim, hidden, ftfm_steps):
    torch.manual_seed(0)
    hidden = tuple(hidden)

    class TimeEmb(torch.nn.Module):
        def forward(self, t):
            half = TIME_DIM // 2
            freqs = torch.exp(torch.linspace(0.0, math.log(100.0), half))
            ang = t[:, None] * freqs[None]
            return torch.cat([ang.sin(), ang.cos()], -1)

    class VelocityMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            f0 = hidden[0]
            self.temb = TimeEmb()
            self.e1, self.e2 = torch.nn.Linear(TIME_DIM, f0), torch.nn.Linear(f0, f0)
            self.inp = torch.nn.Linear(dim, f0)
            self.hs = torch.nn.ModuleList(torch.nn.Linear(a, b)
                                          for a, b in zip(hidden[:-1], hidden[1:]))
            self.es = torch.nn.ModuleList(torch.nn.Linear(f0, b) for b in hidden[1:])
            self.out = torch.nn.Linear(hidden[-1], dim)

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
    x1 = torch.randn(batch, dim)
    x0 = torch.randn(batch, dim)
    sides = {}

    def cfm():
        z = torch.randn_like(x1)
        t = torch.rand(batch)
        xt = (1 - t[:, None]) * z + t[:, None] * x1
        loss = ((net(xt, t) - (x1 - z)) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    sides["cfm"] = cfm
    for n in ftfm_steps:
        def ft(n=n):
            x = x0
            dt = 1.0 / n
            for i in range(n):
                x = x + dt * net(x, torch.tensor(i * dt))
            loss = 0.5 * ((x1 - x) ** 2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        sides[f"ftfm_N{n}"] = ft
    return sides


def run(size: str = "full", **overrides) -> dict:
    """All measurements at one size (``SIZES``; keyword overrides win)."""
    load_before = H.load_1min()
    cfg = {**SIZES[H.check_size(size)], **overrides}
    geom = {k: cfg[k] for k in ("batch", "dim", "hidden", "ftfm_steps")}
    jx, (net, params, x0, x1) = jax_sides(**geom)
    torch = H.torch_or_none()
    tt = torch_sides(torch, **geom) if torch is not None else {}
    steps = {}
    for name, fn in jx.items():
        sides = {"jax": fn, **({"torch": tt[name]} if name in tt else {})}
        r = H.compare(sides, rounds=cfg["rounds"], baseline="torch" if tt else None)
        r["steps_per_s"] = {k: 1.0 / v for k, v in r["median_s"].items()}
        steps[name] = r
    res = {"benchmark": "flow", "size": size, "setting": cfg, "steps": steps,
           "ftfm_grad_temp_bytes": memory(net, params, x0, x1, cfg["memory_steps"])}
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
    over = {"rounds": a.rounds} if a.rounds else {}
    H.write(run(a.size, **over), a.out)


if __name__ == "__main__":
    main()
