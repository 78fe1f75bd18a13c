"""DEUP: Direct Epistemic Uncertainty Prediction (Lahlou et al., arXiv 2102.08501).

Epistemic uncertainty is the excess risk ``EU(x) = R(f, x) - A(x)``; DEUP
estimates it as ``u(x) = max(0, e(phi(x)) - a(x))`` with ``e`` trained on
*out-of-sample* losses of the main predictor ``f`` and ``a`` an aleatoric
estimate.

Choices where the spec is silent (and fixes of the official code's defects):
  * Every fit is full-batch Adam for ``MLPConfig.steps`` real steps (the
    official code's stray ``break`` made an "epoch" one minibatch).
  * The error data contain only out-of-sample rows: each row stores the fold
    id of the model that produced it, its point index, and that model's
    training mask; :func:`check_no_leakage` verifies it, and
    :func:`kfold_error_data` makes it true by construction (weight 0 on the
    held-out fold). No in-sample error is ever mixed in (official defect).
  * Features of a row are computed relative to *that row's model's* training
    set, with the same function used at inference (relative to ``f``'s
    training set). Seen-bit convention everywhere: ``b = 1`` iff ``x`` is within
    ``seen_eps`` of the predictor's training inputs. Out-of-sample rows thus
    always have ``b = 0`` (the official code flips the bit between training
    and inference). Because no in-sample row exists, ``b`` is off by default
    in ``phi``: it would be constant in ``e``'s training data; seen points are
    told apart by the distance / density features, which do vary.
  * Log-loss targets are mapped back to the raw scale with the
    ``E[log chi^2_1]`` correction (:data:`LOG_CHI2_1_MEAN`) before ``a`` is
    subtracted, so pure noise with ``f = mu`` gives ``u ~ 0``.
  * Classification: the loss is ``-log f(y|x)``; ``a = 0`` for clean labels.
  * Variance feature: ``log(var + 1e-12)`` across ensemble members or
    MC-dropout masks (summed over classes for probabilities).
  * KDE bandwidth: Scott's rule on the reference set unless given.
  * ``e``'s predictions are clipped to the range of its training targets
    (official code clamps log-uncertainties to [-20, 3]); without it, ``exp``
    of a log-target network explodes far from the data.
  * SMO: see :mod:`gapjax.deup._smo` (unit cube, fixed target scale, shared
    candidate sets across methods, error row added before refitting; MLPs are
    warm-started across acquisitions as in the official code; GP seeds run
    under ``lax.map`` because a batched CPU Cholesky is ~35x slower).
"""

from gapjax.deup._aleatoric import (fit_heteroscedastic, fit_repeat_aleatoric,
                                    known_noise, predict_heteroscedastic,
                                    predict_repeat_aleatoric, repeat_variance,
                                    zero_aleatoric)
from gapjax.deup._deup import DEUPConfig, DEUPState, deup_predict, fit_deup
from gapjax.deup._errors import (LOG_CHI2_1_MEAN, ErrorConfig, ErrorData,
                                 ErrorPredictor, check_no_leakage, concat_error_data,
                                 empty_error_data, epistemic_uncertainty,
                                 excess_risk_log_loss, excess_risk_squared,
                                 fit_error_predictor, init_error_predictor, kfold_error_data, leaked_rows,
                                 loss_to_target, predict_error, random_folds, set_row,
                                 target_to_error)
from gapjax.deup._features import (FeatureConfig, compute_features, distance_to_data,
                                   kde_log_density, scott_bandwidth, seen_bit)
from gapjax.deup._fit import (MLP, MLPConfig, apply_ensemble, apply_mlp, fit_ensemble,
                              fit_mlp, log_variance, mc_dropout_outputs, pointwise_loss)
from gapjax.deup._gp import GPParams, fit_gp, gp_init, gp_neg_mll, gp_posterior, rbf_kernel
from gapjax.deup._predictor import Predictor, fit_predictor, init_predictor, loss_of, predict
from gapjax.deup._smo import (LEVY_N13, METHODS, MULTI_OPTIMA, Objective, SMOConfig,
                              default_smo_deup, expected_improvement, multi_optima,
                              neg_levy_n13, run_smo, run_smo_seeds)

__all__ = [n for n in dir() if not n.startswith("_")]
