"""Training steps/s of the ICL decoder: jitted JAX vs eager PyTorch, same CPU.

    python -m benchmarks.bench_icl --out FILE.json [--size full|quick|tiny] [--rounds R]

Same model (GPT-2 pre-LN decoder, interleaved tokens, learned positions, mean
and softplus-sigma read-out), same batch, same Gaussian NLL and Adam, at the
small preset (6x4x128, d = 8, T = 41, batch 64) and the official 12x8x256
preset (T = 101). The PyTorch side is an eager module written like Hugging
Face GPT-2's eager attention path used by the official code (Garg et al.'s
fork); it is imported lazily and skipped when missing. JAX runs twice: one
jitted call per step (``jax``) and all of a round's steps in one scanned call
without the global norms (``jax_scan``). The sides alternate round by round
(``benchmarks._harness.compare``); each round times ``steps`` consecutive
steps per side. The JSON records the paired ratios, steps/s and
tokens/s of both sides, the load average, and whether the process runs with
huge pages for large mallocs (``environment.huge_pages``: as the runner, see
``gapjax._runtime``; ``benchmarks.run_all`` also runs this benchmark once
without them).
"""

from __future__ import annotations

import argparse
import math

import jax
import numpy as np
import optax

from benchmarks import _harness as H
from gapjax import icl
from gapjax.train import init_train_state, make_train_step, scan_train_steps

SIZES = {
    "full": dict(cases=[dict(preset="small", dim=8, length=41, batch=64, steps=10, rounds=10),
                        dict(preset="official", dim=8, length=101, batch=64, steps=3,
                             rounds=5)]),
    "quick": dict(cases=[dict(preset="small", dim=8, length=41, batch=64, steps=3, rounds=3),
                         dict(preset="official", dim=8, length=101, batch=64, steps=1,
                              rounds=3)]),
    "tiny": dict(cases=[dict(preset="tiny", dim=2, length=5, batch=4, steps=1, rounds=2)]),
}


def jax_side(preset, dim, length, batch, steps):
    """Closures running ``steps`` train steps: one jitted call per step
    (``jax``), and all ``steps`` in one ``scan_train_steps`` call without the
    global norms (``jax_scan``: the dispatch granularity a loop gets by
    scanning the steps between two logging points); and the batch."""
    model = icl.make_model(preset, dim, length)
    tx = optax.adam(1e-4)
    loss_fn = icl.make_loss_fn(model)
    b = icl.make_batch_fn(batch, length, dim)(jax.random.key(0), 0)
    b = {"xs": b["xs"], "ys": b["ys"]}
    init = lambda: init_train_state(jax.random.key(1),
                                    lambda k: model.init(k, b["xs"], b["ys"]), tx)
    step = make_train_step(loss_fn, tx)
    scanned = jax.jit(lambda s: scan_train_steps(loss_fn, tx, s, lambda t: b, steps,
                                                 norms=False), donate_argnums=0)
    holders = {"jax": [init()], "jax_scan": [init()]}

    def run():
        s = holders["jax"][0]
        for _ in range(steps):
            s, m = step(s, b)
        jax.block_until_ready(m)
        holders["jax"][0] = s

    def run_scan():
        s, m = scanned(holders["jax_scan"][0])
        jax.block_until_ready(m)
        holders["jax_scan"][0] = s

    nparams = sum(x.size for x in jax.tree.leaves(holders["jax"][0].params))
    cost = step.lower(holders["jax"][0], b).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    return {"jax": run, "jax_scan": run_scan}, int(nparams), (b["xs"], b["ys"]), flops


def matmul_roofline(torch=None, n: int = 2048, rounds: int = 5) -> dict:
    """GFLOP/s of one ``n x n x n`` float32 matmul, jitted JAX and (if given)
    torch, best of ``rounds``: the machine's attainable matmul rate that the
    train steps' GFLOP/s are read against."""
    import time

    import jax.numpy as jnp
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    fns = {"jax": lambda: mm(a).block_until_ready()}
    if torch is not None:
        ta = torch.from_numpy(np.asarray(a).copy())
        fns["torch"] = lambda: ta @ ta
    out = {}
    for k, f in fns.items():
        f()
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            f()
            best = min(best, time.perf_counter() - t0)
        out[k] = 2.0 * n ** 3 / best / 1e9
    return {"n": n, "gflop_per_s": out}


def torch_side(torch, preset, dim, length, steps, data):
    """Closure running ``steps`` eager torch train steps (same model, data, loss)."""
    from torch import nn
    n_layer, n_head, n_embd = icl.PRESETS[preset]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
            self.c_attn = nn.Linear(n_embd, 3 * n_embd)
            self.c_proj = nn.Linear(n_embd, n_embd)
            self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
            self.c_fc = nn.Linear(n_embd, 4 * n_embd)
            self.mlp_proj = nn.Linear(4 * n_embd, n_embd)

        def forward(self, h, mask):
            b, n, e = h.shape
            hd = e // n_head
            q, k, v = self.c_attn(self.ln_1(h)).split(e, dim=2)
            q, k, v = (t.view(b, n, n_head, hd).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
            att = att.masked_fill(~mask, torch.finfo(att.dtype).min).softmax(-1)
            o = (att @ v).transpose(1, 2).reshape(b, n, e)
            h = h + self.c_proj(o)
            m = nn.functional.gelu(self.c_fc(self.ln_2(h)), approximate="tanh")
            return h + self.mlp_proj(m)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.read_in = nn.Linear(dim, n_embd)
            self.wpe = nn.Parameter(0.02 * torch.randn(2 * length, n_embd))
            self.blocks = nn.ModuleList([Block() for _ in range(n_layer)])
            self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
            self.read_out = nn.Linear(n_embd, 2)
            n = 2 * length
            self.register_buffer("mask", torch.tril(torch.ones(n, n, dtype=torch.bool)))

        def forward(self, xs, ys):
            y_tok = torch.zeros_like(xs)
            y_tok[..., 0] = ys
            z = torch.stack([xs, y_tok], dim=2).view(xs.shape[0], -1, dim)
            h = self.read_in(z) + self.wpe[: z.shape[1]]
            for blk in self.blocks:
                h = blk(h, self.mask)
            out = self.read_out(self.ln_f(h)[:, ::2])
            return out[..., 0], nn.functional.softplus(out[..., 1])

    model = Model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    xs = torch.from_numpy(np.asarray(data[0]).copy())
    ys = torch.from_numpy(np.asarray(data[1]).copy())

    def step():
        mu, s = model(xs, ys)
        var = torch.clamp(s ** 2, min=icl.VAR_FLOOR)
        loss = (0.5 * torch.log(var) + 0.5 * (ys - mu) ** 2 / var).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def run():
        for _ in range(steps):
            step()

    return run, int(sum(p.numel() for p in model.parameters()))


def run(size: str = "full", *, cases=None, rounds=None) -> dict:
    """Both presets at one size (``SIZES``); ``cases``/``rounds`` override."""
    load_before = H.load_1min()
    cases = cases or SIZES[H.check_size(size)]["cases"]
    torch = H.torch_or_none()
    out = []
    for c in cases:
        c = dict(c, **({"rounds": rounds} if rounds else {}))
        geom = {k: c[k] for k in ("preset", "dim", "length", "batch", "steps")}
        sides, jparams, data, flops = jax_side(**geom)
        row = {"setting": c, "tokens_per_step": c["batch"] * 2 * c["length"],
               "params": {"jax": jparams}}
        if torch is not None:
            trun, tparams = torch_side(torch, c["preset"], c["dim"], c["length"],
                                       c["steps"], data)
            sides["torch"] = trun
            row["params"]["torch"] = tparams
        r = H.compare(sides, rounds=c["rounds"], baseline="torch" if torch else None)
        r["steps_per_s"] = {k: c["steps"] / v for k, v in r["median_s"].items()}
        r["tokens_per_s"] = {k: v * row["tokens_per_step"] for k, v in r["steps_per_s"].items()}
        # XLA's count for one step (both sides run the same model and update)
        r["gflop_per_step"] = flops / 1e9
        r["gflop_per_s"] = {k: flops / 1e9 * v for k, v in r["steps_per_s"].items()}
        row.update(r)
        out.append(row)
    res = {"benchmark": "icl", "size": size, "cases": out,
           "matmul_roofline": matmul_roofline(torch, n=256 if size == "tiny" else 2048)}
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
    H.write(run(a.size, rounds=a.rounds), a.out)


if __name__ == "__main__":
    main()
