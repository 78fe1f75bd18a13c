"""The digits few-shot benchmark (scenes, folds, episodes), the backbone's
checkpoint reuse through gapjax.train, and parity with the official PyTorch
classifier (when torch is installed)."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gapjax import repri as R
from gapjax.train import Task, train_and_evaluate

CFG = R.SceneConfig()


def test_folds_partition_classes():
    novel_all = []
    for f in range(R.NUM_FOLDS):
        base, novel = R.fold_classes(f)
        assert set(base) | set(novel) == set(range(10)) and not set(base) & set(novel)
        novel_all += list(novel)
    assert sorted(novel_all) == list(range(10))
    with pytest.raises(ValueError, match="fold"):
        R.fold_classes(5)


def test_base_scenes_hold_base_digits_only(getkey):
    base, novel = R.fold_classes(1)
    bank = R.digit_bank("train", CFG.digit_size)
    keys = jax.random.split(getkey(), 16)
    img, lab = jax.jit(jax.vmap(lambda k: R.base_scene(k, bank, base, CFG)))(keys)
    lab = np.asarray(lab)
    assert img.shape == (16, 32, 32, 3) and lab.shape == (16, 32, 32)
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    vals = set(np.unique(lab).tolist())
    assert vals <= set(range(1 + len(base))) | {255}
    # 2..3 digits per scene: at least two distinct objects' worth of pixels.
    assert all((l_ != 0).sum() > 0 for l_ in lab)


def test_episodes_deterministic_and_contain_target(getkey):
    bank = R.digit_bank("test", CFG.digit_size)
    _, novel = R.fold_classes(0)
    key = getkey()
    ep = R.sample_episodes(key, bank, novel, 3, 12, CFG)
    ep2 = R.sample_episodes(key, bank, novel, 3, 12, CFG)
    np.testing.assert_array_equal(ep["query_image"], ep2["query_image"])
    assert set(np.asarray(ep["classes"]).tolist()) <= set(novel)
    sm, qm = np.asarray(ep["support_masks"]), np.asarray(ep["query_mask"])
    assert set(np.unique(sm).tolist()) <= {0, 1, 255}
    # Every support and query holds the target, also on the 16x16 feature grid.
    ds = sm[..., R.nearest_indices(32, 16), :][..., R.nearest_indices(32, 16)]
    assert ((ds == 1).sum((-1, -2)) > 0).all()
    assert ((qm == 1).sum((-1, -2)) > 0).all()
    assert (qm == 255).any()                               # ignore boundary band


def _size_log_ratio(cfg, key, tasks=200):
    """log(query fg share / 1st support fg share) on the 16x16 feature grid."""
    bank = R.digit_bank("test", cfg.digit_size)
    ep = R.sample_episodes(key, bank, R.fold_classes(0)[1], 1, tasks, cfg)
    q = np.asarray(R.oracle_pi(ep["query_mask"], (16, 16)))
    s = np.asarray(R.oracle_pi(ep["support_masks"][:, 0], (16, 16)))
    return np.log(q / s), ep


def test_scale_variant_widens_support_query_size_spread(getkey):
    key = getkey()
    fixed, ep_fixed = _size_log_ratio(CFG, key)
    varied, ep = _size_log_ratio(R.SceneConfig(min_scale=0.3), key)
    # Every target is still visible on the feature grid at the smallest scale.
    assert np.isfinite(varied).all()
    # Measured on 200 tasks: std 0.40 (fixed) vs 0.80 (U[0.3, 1] scale); the
    # scale factor alone adds std(log z^2) = 0.64 in each image, so the spread
    # of the ratio must grow by well over 1.5x (sampling error of a std over 200
    # tasks is ~5%).
    assert np.std(varied) > 1.5 * np.std(fixed)
    assert np.mean(np.abs(varied) > np.log(2)) > 2 * np.mean(np.abs(fixed) > np.log(2))
    # Objects shrink on average: mean area factor E[z^2] = (1 - 0.3^3) / (3 * 0.7) = 0.46.
    ratio = (ep["query_mask"] == 1).sum() / (ep_fixed["query_mask"] == 1).sum()
    assert 0.3 < float(ratio) < 0.7
    # min_scale=1 keeps the default scenes bit for bit (same random stream).
    a = R.sample_episodes(key, R.digit_bank("test", 14), (0, 1), 1, 3, CFG)
    b = R.sample_episodes(key, R.digit_bank("test", 14), (0, 1), 1, 3,
                          R.SceneConfig(min_scale=1.0))
    np.testing.assert_array_equal(a["query_image"], b["query_image"])
    with pytest.raises(ValueError, match="min_scale"):
        R.SceneConfig(min_scale=0.0)


def _load_bench():
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_repri.py"
    spec = importlib.util.spec_from_file_location("_bench_repri", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("K", [1, 3])
def test_matches_official_pytorch_classifier(K, x64):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    B = _load_bench()
    T, h, C, H = 3, 6, 8, 13                   # 13 -> 6: non-integer nearest ratio
    fs, sm, fq, qm = B.make_tasks(T, K, h, h, C, H, H, seed=K)
    # Normalise in float64 (test.py's F.normalize): our inference re-normalises,
    # which must then be a no-op to float64 precision.
    fs, fq = fs.astype(np.float64), fq.astype(np.float64)
    fs /= np.linalg.norm(fs, axis=-1, keepdims=True)
    fq /= np.linalg.norm(fq, axis=-1, keepdims=True)
    Classifier = B._torch_classifier(torch, F)
    tfs = torch.from_numpy(np.ascontiguousarray(fs.transpose(0, 1, 4, 2, 3)))
    tfq = torch.from_numpy(np.ascontiguousarray(fq.transpose(0, 3, 1, 2)))[:, None]
    tsm, tqm = torch.from_numpy(sm), torch.from_numpy(qm)[:, None]
    clf = Classifier()
    clf.init_prototypes(tfs, tfq, tsm)
    clf.compute_FB_param(tfq, tqm)
    pi0 = clf.FB_param.detach().numpy().copy()
    clf.RePRI(tfs, tfq, tsm, tqm, torch.full((T,), float(K), dtype=torch.float64))
    out = R.repri_batch(jnp.asarray(fs), jnp.asarray(sm.astype(np.int32)),
                        jnp.asarray(fq), jnp.asarray(qm != 255))
    # Same float64 algorithm; only summation order differs (rtol 1e-9).
    np.testing.assert_allclose(out.history["pi_fg"][:, 0], pi0[:, 1], rtol=1e-9)
    np.testing.assert_allclose(out.pi, clf.FB_param.detach().numpy(), rtol=1e-9)
    np.testing.assert_allclose(out.classifier.prototype, clf.prototype.detach().numpy(),
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out.classifier.bias, clf.bias.detach().numpy(), rtol=1e-8)
    # Prediction: bilinear (align_corners=True) upsampling of logits, sigmoid, argmax.
    logits = F.interpolate(clf.get_logits(tfq).detach(), size=(H, H), mode="bilinear",
                           align_corners=True)
    probas = clf.get_probas(logits).detach()
    p, pred = R.predict(out.classifier, jnp.asarray(fq), (H, H))
    np.testing.assert_allclose(p, probas[:, 0, 1].numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(pred, probas[:, 0].argmax(1).numpy())


def test_backbone_checkpoint_is_reused(tmp_path):
    base, _ = R.fold_classes(0)
    model, init_fn, loss_fn, batch_fn, eval_batch_fn, eval_fn = R.base_training_parts(
        base, CFG, batch_size=8, widths=(8, 8, 8, 8), groups=4)
    calls = []

    def counting_batch_fn(key, step):
        calls.append(1)                                     # counts traces only
        return batch_fn(key, step)

    task = Task(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(1e-3),
                batch_fn=counting_batch_fn)
    cfg = dict(seed=0, num_steps=3, log_every=1, resume=True, num_devices=1,
               progress=False)
    s1, sum1 = train_and_evaluate(task, cfg, tmp_path / "bb")
    assert sum1["step"] == 3 and len(calls) == 1
    s2, sum2 = train_and_evaluate(task, cfg, tmp_path / "bb")
    # Restored, not retrained: the batch function is never traced again and
    # the parameters are identical.
    assert sum2["step"] == 3 and len(calls) == 1
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_array_equal(a, b)
    f = R.extract_features(model, s2.params, jnp.zeros((3, 32, 32, 3)))
    assert f.shape == (3, 16, 16, 8) and float(f.min()) >= 0.0      # post-ReLU


@pytest.mark.slow  # ~50 s CPU: two variants' backbones and all methods compiled
def test_experiment_rows_carry_paired_intervals_for_both_scale_variants(tmp_path):
    """main() on a tiny config: every claim is reported for the fixed-scale and
    the scale-varied benchmark, with its seed count, 95% CI and, on a miss, a
    note; the size spread of both variants is recorded."""
    from gapjax.configs.repri import get_config
    from gapjax.experiments import repri as exp

    c = get_config("quick")
    c.seeds, c.num_tasks, c.num_steps, c.widths = (0, 1), 6, 3, (8, 8, 8, 8)
    c.shots, c.num_examples, c.scale_variants, c.batch_size = (1, 2), 2, (1.0, 0.5), 8
    summary = exp.main(c, tmp_path)
    claims = summary["claims"]
    assert len(claims) == 8
    assert sum(cl["claim"].startswith("[fixed scale]") for cl in claims) == 4
    for cl in claims:
        assert cl["seeds"] == 2 and cl["ci_low"] <= cl["ci_high"]
        assert cl["passed"] or cl["note"]
        assert (tmp_path / cl["figure"]).exists()
    sizes = {k: v["size"]["log_ratio_std"] for k, v in summary["variants"].items()}
    assert set(sizes) == {"minscale1", "minscale0.5"} and all(s > 0 for s in sizes.values())
