"""Tasks per second: vmapped, jit-compiled RePRI vs an eager PyTorch port of the
official classifier (``src/classifier.py``), same CPU, same process.

    python benchmarks/bench_repri.py --out FILE.json [--tasks 200] [--repeats 5]

Both sides run the full official inference per task: mask downsampling,
prototype/bias/pi initialisation, 49 SGD updates with the pi update at 10.
The PyTorch side processes tasks the way the official ``test.py`` does: in
batches of ``batch_size_val`` tasks (official ``scripts/oracle.sh``: 200 for
1-shot, 5 for 5-shot; see BATCH_SIZE_VAL) with one ``torch.optim.SGD`` over the batch's
stacked prototypes/biases and the summed task losses. Features are already
L2-normalised on both sides (as ``test.py`` does before the classifier).
Warm-up (and jit compilation) excluded; median of ``--repeats`` timed runs.
torch is imported lazily; without it the JSON records ``"torch": "not installed"``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from gapjax import repri as R

# Official scripts/test.sh & oracle.sh: batch_size_val per shot.
BATCH_SIZE_VAL = {1: 200, 5: 5}


def make_tasks(T, K, h, w, C, H, W, seed=0):
    rs = np.random.RandomState(seed)
    sm = (rs.rand(T, K, H, W) < 0.3).astype(np.int64)
    sm[rs.rand(T, K, H, W) < 0.1] = 255
    sm[:, :, 0, 0] = 1
    qm = (rs.rand(T, H, W) < 0.3).astype(np.int64)
    qm[rs.rand(T, H, W) < 0.1] = 255
    fs = np.abs(rs.randn(T, K, h, w, C)).astype(np.float32)
    fq = np.abs(rs.randn(T, h, w, C)).astype(np.float32)
    fs /= np.maximum(np.linalg.norm(fs, axis=-1, keepdims=True), 1e-12)
    fq /= np.maximum(np.linalg.norm(fq, axis=-1, keepdims=True), 1e-12)
    return fs, sm, fq, qm


def time_jax(fs, sm, fq, qm, repeats):
    fs, fq = jnp.asarray(fs), jnp.asarray(fq)
    sm, qv = jnp.asarray(sm.astype(np.int32)), jnp.asarray(qm != 255)

    def go():
        out = R.repri_batch(fs, sm, fq, qv)
        jax.block_until_ready(out)

    go()
    go()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        go()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def _torch_classifier(torch, F):
    """The official ``Classifier`` (temperature 20, adapt_iter 50, lr 0.025,
    weights [1, 'auto', 'auto'], FB_param_update [10], soft pi), batched."""

    class Classifier:
        def __init__(self):
            self.temperature, self.adapt_iter, self.lr = 20.0, 50, 0.025
            self.FB_param_update = [10]

        def init_prototypes(self, features_s, features_q, gt_s):
            ds_gt_s = F.interpolate(gt_s.float(), size=features_s.shape[-2:],
                                    mode="nearest").long().unsqueeze(2)
            fg_mask = ds_gt_s == 1
            proto = (features_s * fg_mask).sum(dim=(1, 3, 4))
            proto /= fg_mask.sum(dim=(1, 3, 4)) + 1e-10
            self.prototype = proto
            self.bias = self.get_logits(features_q).mean(dim=(1, 2, 3))

        def get_logits(self, features):
            features = features.permute((0, 1, 3, 4, 2))
            prototype = self.prototype.unsqueeze(1).unsqueeze(2)
            cossim = features.matmul(prototype.unsqueeze(4)).squeeze(4)
            cossim /= (prototype.unsqueeze(3).norm(dim=4) * features.norm(dim=4)) + 1e-10
            return self.temperature * cossim

        def get_probas(self, logits):
            logits_fg = logits - self.bias.unsqueeze(1).unsqueeze(2).unsqueeze(3)
            probas_fg = torch.sigmoid(logits_fg).unsqueeze(2)
            return torch.cat([1 - probas_fg, probas_fg], dim=2)

        def compute_FB_param(self, features_q, gt_q):
            ds_gt_q = F.interpolate(gt_q.float(), size=features_q.size()[-2:],
                                    mode="nearest").long()
            valid = (ds_gt_q != 255).unsqueeze(2)
            probas = self.get_probas(self.get_logits(features_q)).detach()
            self.FB_param = (valid * probas).sum(dim=(1, 3, 4)) / valid.sum(dim=(1, 3, 4))

        def get_entropies(self, valid, probas):
            ent = -((valid.unsqueeze(2) * (probas * torch.log(probas + 1e-10))).sum(2))
            ent = ent.sum(dim=(1, 2, 3)) / valid.sum(dim=(1, 2, 3))
            marginal = (valid.unsqueeze(2) * probas).sum(dim=(1, 3, 4))
            marginal /= valid.sum(dim=(1, 2, 3)).unsqueeze(1)
            d_kl = (marginal * torch.log(marginal / (self.FB_param + 1e-10))).sum(1)
            return d_kl, ent

        def get_ce(self, probas, valid, one_hot):
            ce = -((valid.unsqueeze(2) * (one_hot * torch.log(probas + 1e-10))).sum(2))
            return ce.sum(dim=(1, 2, 3)) / valid.sum(dim=(1, 2, 3))

        def RePRI(self, features_s, features_q, gt_s, gt_q, n_shots):
            l1, l2, l3 = 1.0, 1 / n_shots, 1 / n_shots
            self.prototype.requires_grad_()
            self.bias.requires_grad_()
            opt = torch.optim.SGD([self.prototype, self.bias], lr=self.lr)
            ds_gt_q = F.interpolate(gt_q.float(), size=features_s.size()[-2:],
                                    mode="nearest").long()
            ds_gt_s = F.interpolate(gt_s.float(), size=features_s.size()[-2:],
                                    mode="nearest").long()
            vq, vs = (ds_gt_q != 255).float(), (ds_gt_s != 255).float()
            oh = ds_gt_s.unsqueeze(2).clone()
            oh[oh == 255] = 0
            one_hot = torch.zeros(*ds_gt_s.shape[:2], 2, *ds_gt_s.shape[2:]).scatter_(2, oh, 1)
            for it in range(1, self.adapt_iter):
                ps = self.get_probas(self.get_logits(features_s))
                pq = self.get_probas(self.get_logits(features_q))
                d_kl, ent = self.get_entropies(vq, pq)
                ce = self.get_ce(ps, vs, one_hot)
                loss = l1 * ce + l2 * d_kl + l3 * ent
                opt.zero_grad()
                loss.sum(0).backward()
                opt.step()
                if (it + 1) in self.FB_param_update and l2.sum().item() != 0:
                    self.compute_FB_param(features_q, gt_q)
                    l2 = l2 + 1

    return Classifier


def time_torch(fs, sm, fq, qm, bsz, repeats, threads=None):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None, None, "not installed"
    if threads:
        torch.set_num_threads(threads)
    Classifier = _torch_classifier(torch, F)
    # Official layout: features [n_task, shot, c, h, w], gt [n_task, shot, H, W].
    tfs = torch.from_numpy(np.ascontiguousarray(fs.transpose(0, 1, 4, 2, 3)))
    tfq = torch.from_numpy(np.ascontiguousarray(fq.transpose(0, 3, 1, 2)))[:, None]
    tsm = torch.from_numpy(sm)
    tqm = torch.from_numpy(qm)[:, None]
    T, K = fs.shape[:2]

    def go():
        for s in range(0, T, bsz):
            sl = slice(s, s + bsz)
            clf = Classifier()
            clf.init_prototypes(tfs[sl], tfq[sl], tsm[sl])
            clf.compute_FB_param(tfq[sl], tqm[sl])
            n_shots = torch.full((tfs[sl].shape[0],), float(K))
            clf.RePRI(tfs[sl], tfq[sl], tsm[sl], tqm[sl], n_shots)

    go()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        go()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts, torch.__version__


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--feature-size", type=int, default=16)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch.set_num_threads (0 = torch's default)")
    args = ap.parse_args()
    h = w = args.feature_size
    res = {"device": platform.processor() or platform.machine(),
           "jax": jax.__version__, "jax_backend": jax.default_backend(),
           "tasks": args.tasks, "feature_grid": [h, w], "channels": args.channels,
           "image_size": args.image_size, "updates": 49, "results": {}}
    for K in (1, 5):
        fs, sm, fq, qm = make_tasks(args.tasks, K, h, w, args.channels,
                                    args.image_size, args.image_size)
        tj, tsj = time_jax(fs, sm, fq, qm, args.repeats)
        tt, tst, tver = time_torch(fs, sm, fq, qm, BATCH_SIZE_VAL[K], args.repeats,
                                   args.torch_threads)
        r = {"jax_seconds": tj, "jax_tasks_per_s": args.tasks / tj, "jax_all": tsj,
             "torch_batch_size_val": BATCH_SIZE_VAL[K]}
        if tt is None:
            res["torch"] = tver
        else:
            import torch

            res["torch"] = tver
            res["torch_threads"] = torch.get_num_threads()
            r.update({"torch_seconds": tt, "torch_tasks_per_s": args.tasks / tt,
                      "torch_all": tst, "speedup_jax_over_torch": tt / tj})
        res["results"][f"{K}-shot"] = r
        print(f"{K}-shot:", json.dumps({k: v for k, v in r.items() if not k.endswith("_all")}))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
