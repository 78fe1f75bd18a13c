"""Ghost BN train-step time: vs flax.linen.BatchNorm, and vs the official
PyTorch way (a Python loop over chunks with ordinary BatchNorm1d and gradient
accumulation).

    python -m benchmarks.bench_ghost_bn --out FILE.json [--size full|quick|tiny] [--rounds R]

All sides train the same "F1" MLP (Linear+BN+ReLU blocks -> Linear) with the
same optimizer (clip 5, weight decay 1e-4, SGD momentum 0.9) on the same batch,
measured in one process: warm-up (jit compile excluded), block_until_ready,
every variant once per round in alternating order (``benchmarks._harness.compare``),
per-round paired ratios and medians, load average. torch is imported lazily;
without it the JSON says ``"torch": "not installed"``.
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from benchmarks import _harness as H
from gapjax.ghost_bn import BNMLP, Regime, cross_entropy, make_optimizer
from gapjax.train import init_train_state, make_train_step

CASES = {
    # digits experiment shape: 64 inputs, B_L = 448, ghost 32 (G = 14)
    "digits_448_g32": dict(in_dim=64, batch=448, ghost=32, features=(512,) * 5),
    # paper's MNIST F1: 784 inputs, B_L = 4096, ghost 128 (G = 32)
    "mnist_f1_4096_g128": dict(in_dim=784, batch=4096, ghost=128, features=(512,) * 5),
    "tiny": dict(in_dim=8, batch=16, ghost=4, features=(16, 16)),      # CI smoke size
}
SIZES = {"full": dict(cases=("digits_448_g32", "mnist_f1_4096_g128"), rounds=7),
         "quick": dict(cases=("digits_448_g32",), rounds=5),
         "tiny": dict(cases=("tiny",), rounds=2)}


class FlaxBNMLP(nn.Module):
    """Same MLP with ``flax.linen.BatchNorm`` (the baseline)."""

    features: tuple = (512,) * 5
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = True):
        for w in self.features:
            x = nn.Dense(w)(x)
            x = nn.BatchNorm(momentum=0.9, use_running_average=not train)(x)
            x = nn.relu(x)
        return nn.Dense(self.num_classes)(x)


def jax_step(model, x, y):
    """A closure running one jitted train step (state carried, donated)."""
    tx = make_optimizer(Regime(batch_size=x.shape[0], epochs=1, lr={0: 0.1}), x.shape[0])

    def loss_fn(params, coll, batch, key):
        logits, new = model.apply({"params": params, **coll}, batch[0], mutable=["batch_stats"])
        return cross_entropy(logits, batch[1]), (new, {})

    state = init_train_state(jax.random.key(0), lambda k: model.init(k, x), tx)
    step = make_train_step(loss_fn, tx)
    holder = [state]
    batch = (x, y)

    def run():
        holder[0], m = step(holder[0], batch)
        jax.block_until_ready((holder[0], m))

    return run


def torch_steps(case, x, y):
    """Closures for the PyTorch chunk-loop GBN step and a plain-BN step, or None."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    layers, d = [], case["in_dim"]
    for w in case["features"]:
        layers += [torch.nn.Linear(d, w), torch.nn.BatchNorm1d(w), torch.nn.ReLU(True)]
        d = w
    model = torch.nn.Sequential(*layers, torch.nn.Linear(d, 10))
    model.train()
    crit = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    xt, yt = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y)).long()

    def step(num_chunks):
        # main_gbn.py: chunk loop, backward per chunk, grad /= #chunks, clip 5, step.
        opt.zero_grad()
        chunks = list(zip(xt.chunk(num_chunks), yt.chunk(num_chunks)))
        for xc, yc in chunks:
            loss = crit(model(xc), yc)
            loss.backward()
        for p in model.parameters():
            p.grad.data.div_(len(chunks))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    g = case["batch"] // case["ghost"]
    info = {"version": torch.__version__, "num_threads": torch.get_num_threads()}
    return info, {"torch_gbn_chunk_loop": lambda: step(g), "torch_plain_bn": lambda: step(1)}


def run_case(name, case, rounds):
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (case["batch"], case["in_dim"]), jnp.float32)
    y = jax.random.randint(ky, (case["batch"],), 0, 10)
    feats = case["features"]
    out = {"case": name, **{k: v for k, v in case.items()},
           "G": case["batch"] // case["ghost"]}
    fns = {"flax_batchnorm": jax_step(FlaxBNMLP(features=feats), x, y),
           "gbn": jax_step(BNMLP(features=feats, ghost_batch_size=case["ghost"]), x, y),
           "gbn_whole_batch": jax_step(BNMLP(features=feats, ghost_batch_size=None), x, y)}
    torch_side = torch_steps(case, x, y)
    if torch_side is not None:
        fns.update(torch_side[1])
    r = H.compare(fns, rounds=rounds, warmup=2, baseline="flax_batchnorm")
    out.update(r)
    paired = lambda a, b: [row[a] / row[b] for row in r["rounds"]]
    gbn_over_bn = paired("gbn", "flax_batchnorm")
    out["ratio_gbn_over_flax_bn"] = {"rounds": gbn_over_bn,
                                     "median": statistics.median(gbn_over_bn)}
    if torch_side is None:
        out["torch"] = "not installed"
    else:
        out["torch"] = torch_side[0]
        tr = paired("torch_gbn_chunk_loop", "gbn")
        out["ratio_torch_chunk_loop_over_gbn"] = {"rounds": tr, "median": statistics.median(tr)}
    return out


def run(size: str = "full", *, cases=None, rounds=None) -> dict:
    load_before = H.load_1min()
    cfg = SIZES[H.check_size(size)]
    names = cases or cfg["cases"]
    res = {"benchmark": "ghost_bn", "size": size,
           "cases": [run_case(n, CASES[n], rounds or cfg["rounds"]) for n in names]}
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
