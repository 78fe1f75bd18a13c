"""Training steps/s of the ICL decoder: jitted JAX vs eager PyTorch, same CPU.

    python benchmarks/bench_icl.py --out bench_icl.json [--preset small] [--repeats 5]

Same model (GPT-2 pre-LN decoder, interleaved tokens, learned positions, mean
and softplus-sigma read-out), same batch shape, same Gaussian NLL and Adam.
The PyTorch side is an eager module written like Hugging Face GPT-2's eager
attention path used by the official code (Garg et al.'s fork); it is imported
lazily and recorded as ``"torch": "not installed"`` when missing. Also reports
tokens/s of the JAX step at the official 12x8x256 preset (d = 8, T = 101).
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
import numpy as np
import optax

from gapjax import icl
from gapjax.train import init_train_state, make_train_step


def _median_rate(fn, steps, repeats):
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(steps)
        rates.append(steps / (time.perf_counter() - t0))
    return statistics.median(rates), rates


def bench_jax(preset, dim, length, batch, steps, repeats):
    model = icl.make_model(preset, dim, length)
    tx = optax.adam(1e-4)
    b = icl.make_batch_fn(batch, length, dim)(jax.random.key(0), 0)
    b = {"xs": b["xs"], "ys": b["ys"]}
    state = init_train_state(jax.random.key(1),
                             lambda k: model.init(k, b["xs"], b["ys"]), tx)
    step = make_train_step(icl.make_loss_fn(model), tx)
    state, m = step(state, b)          # compile
    jax.block_until_ready(m)
    holder = [state]

    def run(n):
        s = holder[0]
        for _ in range(n):
            s, m = step(s, b)
        jax.block_until_ready(m)
        holder[0] = s

    run(2)                              # warm-up
    rate, rates = _median_rate(run, steps, repeats)
    nparams = sum(x.size for x in jax.tree.leaves(state.params))
    return {"steps_per_s": rate, "all": rates, "params": int(nparams),
            "tokens_per_s": rate * batch * 2 * length}, (b["xs"], b["ys"])


def bench_torch(preset, dim, length, batch, steps, repeats, data):
    try:
        import torch
        from torch import nn
    except ImportError:
        return "not installed"
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

    def run(n):
        for _ in range(n):
            step()

    run(2)
    rate, rates = _median_rate(run, steps, repeats)
    return {"steps_per_s": rate, "all": rates, "version": torch.__version__,
            "threads": torch.get_num_threads(),
            "params": int(sum(p.numel() for p in model.parameters()))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--length", type=int, default=41)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--official-steps", type=int, default=3)
    ap.add_argument("--skip-official", action="store_true")
    a = ap.parse_args()
    res = {"device": jax.devices()[0].device_kind, "platform": platform.platform(),
           "jax": jax.__version__,
           "setting": {"preset": a.preset, "dim": a.dim, "length": a.length,
                       "batch": a.batch, "tokens_per_step": a.batch * 2 * a.length}}
    res["jax_step"], data = bench_jax(a.preset, a.dim, a.length, a.batch, a.steps, a.repeats)
    res["torch"] = bench_torch(a.preset, a.dim, a.length, a.batch, a.steps, a.repeats, data)
    if isinstance(res["torch"], dict):
        res["jax_over_torch_steps_per_s"] = (res["jax_step"]["steps_per_s"]
                                             / res["torch"]["steps_per_s"])
    if not a.skip_official:
        off, _ = bench_jax("official", 8, 101, 64, a.official_steps, 3)
        res["official_12x8x256_d8_T101_b64"] = off
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
