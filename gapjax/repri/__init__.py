"""RePRI: transductive inference for few-shot segmentation (Boudiaf et al., CVPR 2021).

Per task, a linear classifier (prototype ``w``, bias ``b``) on frozen,
L2-normalised features minimises ``CE(support) + lambda_KL KL(phat || pi) +
lambda_H H(query)`` with plain SGD; :func:`repri_batch` runs hundreds of tasks
in one jit-compiled, vmapped call.

Exact official behaviour reproduced (``src/classifier.py``, ``src/test.py``):
  * ``logit = 20 cos(f, w)``, cosine ``dot / (|f||w| + 1e-10)``; ``p_fg =
    sigmoid(logit - b)``, ``p_bg = 1 - p_fg``; logs are ``log(p + 1e-10)``.
  * init: ``w`` = support-foreground mean pooled over all shots and pixels
    (``sum / (count + 1e-10)``); ``b`` = mean query logit over *all* query
    pixels; ``pi`` = mean ``[p_bg, p_fg]`` over valid query pixels (no grad).
  * CE averaged over valid support pixels of all shots; H and the marginal
    ``phat`` over valid query pixels; ``KL = sum phat log(phat / (pi + 1e-10))``.
  * weights ``[1, 1/K, 1/K]``; SGD lr 0.025, 49 updates (``range(1, 50)``);
    after the 9th update (loop counter 10) ``pi`` is re-estimated from the
    current classifier and ``lambda_KL += 1`` (skipped when ``lambda_KL = 0``).
  * oracle: true ``pi`` (valid downsampled query pixels), weights [1, 1, 0.1],
    299 updates, never re-estimated.
  * masks downsampled to the feature grid by floor-based nearest neighbour
    (ATen's float32 index formula); prediction upsamples the cosine logits
    bilinearly (``align_corners=True``), then bias, sigmoid, and
    ``argmax([p_bg, p_fg])`` with ties to background.
  * features L2-normalised with the norm clamped at 1e-12.

Choices where the spec is silent:
  * The loss weights are traced values (configs differing only in weights,
    e.g. CE / CE+H / RePRI, share one compilation); the number of updates,
    lr, temperature and the pi schedule are static.
  * Task losses are not summed explicitly: each task's gradient is computed
    separately under ``vmap``, which is exactly what summing independent task
    losses gives (and makes the result independent of the batch size).
  * The two inductive baselines share the official initialisation:
    ``PROTOTYPE`` is the initial classifier (0 updates; its bias is the mean
    query logit, as in the official ablation), ``CE_ONLY`` runs the 49 SGD
    updates on the support cross-entropy alone.
  * Input checks (shapes, dtypes, labels in {0, 1, 255}, a support with no
    foreground pixel on the feature grid, a query with no valid pixel, K = 0,
    NaN features) run in Python on concrete inputs; under an outer ``jit``
    only the shape checks apply.
  * FB-IoU: background and foreground IoU, each with intersections and unions
    summed over all tasks, then averaged (the usual FB-IoU of PANet/CANet).
  * The digits benchmark (:mod:`gapjax.repri._scenes`) is described there; the
    backbone (:class:`SegNet`) is trained with Adam on base scenes through
    :mod:`gapjax.train`.
"""

from gapjax.repri._backbone import (SegNet, base_training_parts, extract_features,
                                    pixel_cross_entropy)
from gapjax.repri._inference import (CE_H, CE_ONLY, ORACLE, PROTOTYPE, REPRI,
                                     Classifier, RePRIConfig, RePRIResult,
                                     cosine_logits, downsample_mask, estimate_pi,
                                     fg_probability, init_classifier, l2_normalize,
                                     loss_terms, nearest_indices, oracle_pi, predict,
                                     repri, repri_batch, upsample_bilinear,
                                     valid_mask)
from gapjax.repri._metrics import (IoUSums, accumulate_iou, class_iou, fb_iou,
                                   init_iou_sums, intersection_union, mean_iou)
from gapjax.repri._scenes import (NUM_FOLDS, DigitBank, SceneConfig, base_scene,
                                  compose_scene, digit_bank, episode_scene,
                                  fold_classes, sample_episodes)

__all__ = [
    "RePRIConfig", "REPRI", "CE_ONLY", "CE_H", "PROTOTYPE", "ORACLE", "Classifier",
    "RePRIResult", "repri", "repri_batch", "predict", "oracle_pi", "valid_mask",
    "init_classifier", "estimate_pi", "loss_terms", "cosine_logits", "fg_probability",
    "l2_normalize", "downsample_mask", "upsample_bilinear", "nearest_indices",
    "IoUSums", "init_iou_sums", "accumulate_iou", "intersection_union", "class_iou",
    "mean_iou", "fb_iou",
    "SceneConfig", "DigitBank", "digit_bank", "fold_classes", "compose_scene",
    "base_scene", "episode_scene", "sample_episodes", "NUM_FOLDS",
    "SegNet", "base_training_parts", "extract_features", "pixel_cross_entropy",
]
