"""Tasks per second: vmapped, jit-compiled RePRI vs an eager PyTorch port of the
official classifier (``src/classifier.py``), same machine, same process.

    python -m benchmarks.bench_repri --out FILE.json [--size full|quick|tiny] [--rounds R]

Both sides run the full official inference per task: mask downsampling,
prototype/bias/pi initialisation, 49 SGD updates with the pi update at 10.
The PyTorch side processes tasks the way the official ``test.py`` does: in
batches of ``batch_size_val`` tasks (the official test scripts: 200 for 1-shot,
100 for 5-shot; BATCH_SIZE_VAL) with one ``torch.optim.SGD`` over the batch's
stacked prototypes/biases and the summed task losses, one classifier per batch
(the loop structure of the RePRI spec). Features are already L2-normalised on
both sides (as ``test.py`` does before the classifier). Two feature sizes: the
digits benchmark's (64 channels, 16 x 16, 32 x 32 masks) and the paper's
(512 channels, 53 x 53, masks at the 417 x 417 PASCAL test resolution).
The JAX side is timed on the jitted call only: host-side input validation
(``repri_batch``'s checks) runs once before timing. The sides alternate round
by round (``benchmarks._harness.compare``); warm-up and compilation excluded.
torch is imported lazily; without it only the JAX side is timed.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from gapjax import repri as R

# Official test scripts: batch_size_val per shot (issue 17: 200 for 1-shot, 100 for 5-shot).
BATCH_SIZE_VAL = {1: 200, 5: 100}
DIGITS = dict(feature_size=16, channels=64, image_size=32)
PAPER = dict(feature_size=53, channels=512, image_size=417)
SIZES = {
    "full": dict(cases=[dict(name="digits", **DIGITS, tasks={1: 200, 5: 200}, rounds=5),
                        dict(name="paper", **PAPER, tasks={1: 200, 5: 100}, rounds=3)]),
    "quick": dict(cases=[dict(name="digits", **DIGITS, tasks={1: 200, 5: 200}, rounds=3),
                         dict(name="paper", **PAPER, tasks={1: 20, 5: 10}, rounds=2)]),
    "tiny": dict(cases=[dict(name="tiny", feature_size=4, channels=8, image_size=8,
                             tasks={1: 3, 5: 2}, rounds=2)]),
}


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


def jax_side(fs, sm, fq, qm):
    """Closure running the jitted batch call (validated and compiled once here)."""
    from gapjax.repri import _inference as I
    fs, fq = jnp.asarray(fs), jnp.asarray(fq)
    sm, qv = jnp.asarray(sm.astype(np.int32)), jnp.asarray(qm != 255)
    jax.block_until_ready(R.repri_batch(fs, sm, fq, qv))      # validation + compile
    weights, static = R.REPRI.weights(fs.shape[1]), I._static(R.REPRI)

    def go():
        jax.block_until_ready(I._batch_jit(fs, sm, fq, qv, None, weights, config=static))
    return go


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


def torch_side(torch, fs, sm, fq, qm, bsz):
    """Closure running the official loop: batches of ``bsz`` tasks, one classifier each."""
    import torch.nn.functional as F
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
    return go


def run(size: str = "full", *, cases=None, rounds=None, torch_threads=None) -> dict:
    """Both feature sizes and 1/5 shots at one size (``SIZES``); overrides win."""
    from benchmarks import _harness as H
    load_before = H.load_1min()
    cases = cases or SIZES[H.check_size(size)]["cases"]
    torch = H.torch_or_none()
    if torch is not None and torch_threads:
        torch.set_num_threads(int(torch_threads))
    out = []
    for c in cases:
        c = dict(c, **({"rounds": rounds} if rounds else {}))
        for K in (1, 5):
            T, h = int(c["tasks"][K]), c["feature_size"]
            fs, sm, fq, qm = make_tasks(T, K, h, h, c["channels"], c["image_size"],
                                        c["image_size"])
            sides = {"jax": jax_side(fs, sm, fq, qm)}
            row = {"case": c["name"], "shots": K, "tasks": T,
                   "feature_grid": [h, h], "channels": c["channels"],
                   "mask_size": c["image_size"], "updates": 49}
            if torch is not None:
                bsz = min(BATCH_SIZE_VAL[K], T)
                sides["torch"] = torch_side(torch, fs, sm, fq, qm, bsz)
                row["torch_batch_size_val"] = bsz
            del fs, sm, fq, qm
            r = H.compare(sides, rounds=c["rounds"], baseline="torch" if torch else None)
            r["tasks_per_s"] = {k: T / v for k, v in r["median_s"].items()}
            row.update(r)
            out.append(row)
            del sides
    res = {"benchmark": "repri", "size": size, "results": out}
    res["environment"] = H.environment(load_before)
    return res


def main():
    from benchmarks import _harness as H
    H.reexec_with_huge_pages()   # as python -m gapjax.run (GAPJAX_HUGE_PAGES=0: off)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--size", default="full", choices=H.SIZES)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch.set_num_threads (0 = torch's default)")
    a = ap.parse_args()
    H.write(run(a.size, rounds=a.rounds, torch_threads=a.torch_threads), a.out)


if __name__ == "__main__":
    main()
