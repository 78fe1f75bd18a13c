"""A catalogue of bad inputs to the six methods' public APIs and to the runner.

Every case must raise ``ValueError`` or ``TypeError`` before any result is
returned, with a message that names the offending argument (or config key).
Arrays are tiny and nothing trains, so the whole file runs in seconds; the
few cases that check a numerical fix (integer inputs no longer truncating a
float hyper-parameter, the float32 large-T closed form) are at the end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gapjax import deup as D
from gapjax import flow as F
from gapjax import ghost_bn as G
from gapjax import icl as I
from gapjax import repri as R
from gapjax import scaling as S
from gapjax.config import apply_overrides, check_config, load_config, validate

KEY = jax.random.key(0)
V = ValueError
T = TypeError


def z(*shape, dtype=jnp.float32):
    return jnp.zeros(shape, dtype)


def o(*shape, dtype=jnp.float32):
    return jnp.ones(shape, dtype)


def ints(*shape):
    return jnp.zeros(shape, jnp.int32)


def _regime():
    return G.Regime(batch_size=8, epochs=2.0, lr=((0, 0.1),))


def _gbn_init(x, **kw):
    return G.GhostBatchNorm(**kw).init(KEY, x, use_running_average=False)


def _field(x, t):
    return -x


def _post():
    X = jax.random.normal(KEY, (6, 3))
    return S.fit_posterior(X, X @ jnp.ones(3), 0.5, 1.0)


def _nodes(n=3):
    return (z(n), z(n), o(n), o(n) / n)


def _ng(xs, ys, **kw):
    return I.normal_gamma_predictive(xs, ys, **kw)


def _mlp():
    return D.MLPConfig(hidden=(4,), steps=1)


def _clf_pred(**kw):
    return D.Predictor(mlp=_mlp(), task="classification", num_classes=3, **kw)


def _ed(rows=4, feats=2, points=4):
    return D.empty_error_data(rows, feats, points)


# ---------------------------------------------------------------- ghost_bn
GHOST_BN = [
    ("ce_label_neg", lambda: G.cross_entropy(z(2, 10), jnp.array([-1, 0])), V, "labels"),
    ("ce_label_10", lambda: G.cross_entropy(z(2, 10), jnp.array([10, 0])), V, "labels"),
    ("ce_label_float", lambda: G.cross_entropy(z(2, 10), jnp.array([0.0, 1.0])), T, "labels"),
    ("ce_label_2d", lambda: G.cross_entropy(z(2, 10), ints(2, 1)), V, "labels"),
    ("ce_logits_1d", lambda: G.cross_entropy(z(10), ints(1)), V, "logits"),
    ("ce_batch_mismatch", lambda: G.cross_entropy(z(3, 10), ints(2)), V, "batch"),
    ("ce_empty", lambda: G.cross_entropy(z(0, 10), ints(0)), V, "logits"),
    ("ce_logits_str", lambda: G.cross_entropy(np.array([["a"]]), ints(1)), T, "logits"),
    ("gbn_empty_batch", lambda: _gbn_init(z(0, 3), ghost_batch_size=2), V, "x"),
    ("gbn_rank1", lambda: _gbn_init(z(4), ghost_batch_size=2), V, "x"),
    ("gbn_int_x", lambda: _gbn_init(ints(4, 3), ghost_batch_size=2), T, "x"),
    ("gbn_indivisible", lambda: _gbn_init(z(5, 3), ghost_batch_size=2), V, "ghost_batch_size"),
    ("gbn_gbs_zero", lambda: _gbn_init(z(4, 3), ghost_batch_size=0), V, "ghost_batch_size"),
    ("gbn_gbs_float", lambda: _gbn_init(z(4, 3), ghost_batch_size=2.0), T, "ghost_batch_size"),
    ("gbn_gbs_bool", lambda: _gbn_init(z(4, 3), ghost_batch_size=True), T, "ghost_batch_size"),
    ("gbn_momentum_1", lambda: _gbn_init(z(4, 3), momentum=1.0), V, "momentum"),
    ("gbn_momentum_neg", lambda: _gbn_init(z(4, 3), momentum=-0.1), V, "momentum"),
    ("gbn_epsilon_neg", lambda: _gbn_init(z(4, 3), epsilon=-1.0), V, "epsilon"),
    ("gbn_running_stats", lambda: _gbn_init(z(4, 3), running_stats="median"), V,
     "running_stats"),
    ("gbn_axis_batch", lambda: _gbn_init(z(4, 3), axis=0), V, "axis"),
    ("gbn_axis_range", lambda: _gbn_init(z(4, 3), axis=5), V, "axis"),
    ("gbn_mask_shape", lambda: G.GhostBatchNorm(ghost_batch_size=2).init(
        KEY, z(4, 3), use_running_average=False, mask=jnp.ones((3, 3), bool)), V, "mask"),
    ("num_ghost_zero_gbs", lambda: G.num_ghost_batches(8, 0), V, "ghost_batch_size"),
    ("num_ghost_indivisible", lambda: G.num_ghost_batches(9, 4), V, "ghost_batch_size"),
    ("num_ghost_batch_zero", lambda: G.num_ghost_batches(0, 4), V, "batch_size"),
    ("ema_num_ghost_zero", lambda: G.ema_weights(0, 0.9), V, "num_ghost"),
    ("ema_momentum", lambda: G.ema_weights(2, 1.5), V, "momentum"),
    ("ema_num_ghost_float", lambda: G.ema_weights(2.5, 0.9), T, "num_ghost"),
    ("regime_batch_zero", lambda: G.Regime(batch_size=0, epochs=1.0, lr=((0, 0.1),)), V,
     "batch_size"),
    ("regime_epochs_neg", lambda: G.Regime(batch_size=8, epochs=-1.0, lr=((0, 0.1),)), V,
     "epochs"),
    ("regime_epochs_nan", lambda: G.Regime(batch_size=8, epochs=float("nan"),
                                           lr=((0, 0.1),)), V, "epochs"),
    ("regime_lr_neg", lambda: G.Regime(batch_size=8, epochs=1.0, lr=((0, -0.1),)), V, "rate"),
    ("regime_lr_start", lambda: G.Regime(batch_size=8, epochs=1.0, lr=((1, 0.1),)), V, "lr"),
    ("regime_lr_order", lambda: G.Regime(batch_size=8, epochs=1.0,
                                         lr=((0, 0.1), (2, 0.1), (1, 0.1))), V, "lr"),
    ("regime_momentum", lambda: G.Regime(batch_size=8, epochs=1.0, lr=((0, 0.1),),
                                         momentum=1.0), V, "momentum"),
    ("regime_wd", lambda: G.Regime(batch_size=8, epochs=1.0, lr=((0, 0.1),),
                                   weight_decay=-1.0), V, "weight_decay"),
    ("regime_clip", lambda: G.Regime(batch_size=8, epochs=1.0, lr=((0, 0.1),),
                                     clip_norm=0.0), V, "clip_norm"),
    ("scale_lr_zero", lambda: G.scale_lr(_regime(), 0), V, "large_batch"),
    ("train_longer_neg", lambda: G.train_longer(_regime(), -4), V, "large_batch"),
    ("adapt_regime_type", lambda: G.adapt_regime({"batch_size": 8}, 32), T, "regime"),
    ("steps_per_epoch_big", lambda: G.steps_per_epoch(10, 20), V, "batch_size"),
    ("steps_per_epoch_zero", lambda: G.steps_per_epoch(10, 0), V, "batch_size"),
    ("steps_per_epoch_n0", lambda: G.steps_per_epoch(0, 1), V, "num_examples"),
    ("total_updates_type", lambda: G.total_updates("regime", 100), T, "regime"),
    ("lr_schedule_n", lambda: G.lr_schedule(_regime(), 4), V, "batch_size"),
    ("make_optimizer_type", lambda: G.make_optimizer(None, 100), T, "regime"),
    ("weight_distance_struct", lambda: G.weight_distance({"a": z(2)}, {"b": z(2)}), V,
     "params0"),
    ("weight_distance_shape", lambda: G.weight_distance({"a": z(2)}, {"a": z(3)}), V,
     "params0"),
    ("log_fit_short", lambda: G.log_fit([1, 2], [0.1, 0.2]), V, "points"),
    ("log_fit_shape", lambda: G.log_fit([1, 2, 3], [0.1, 0.2]), V, "distances"),
    ("log_fit_nonpos", lambda: G.log_fit([0, 1, 2], [0.1, 0.2, 0.3]), V, "steps"),
    ("log_fit_nan", lambda: G.log_fit([1, 2, 3], [0.1, np.nan, 0.3]), V, "distances"),
    ("correlation_shape", lambda: G.correlation([1, 2, 3], [1, 2]), V, "x and y"),
]

# ---------------------------------------------------------------- flow
FLOW = [
    ("sinkhorn_eps_zero", lambda: F.sinkhorn_plan(o(4, 2), o(4, 2), eps=0.0), V, "eps"),
    ("sinkhorn_eps_neg", lambda: F.sinkhorn_plan(o(4, 2), o(4, 2), eps=-0.1), V, "eps"),
    ("sinkhorn_eps_nan", lambda: F.sinkhorn_plan(o(4, 2), o(4, 2), eps=float("nan")), V,
     "eps"),
    ("sinkhorn_iters_neg", lambda: F.sinkhorn_plan(o(4, 2), o(4, 2), num_iters=-1), V,
     "num_iters"),
    ("sinkhorn_iters_zero", lambda: F.sinkhorn_plan(o(4, 2), o(4, 2), num_iters=0), V,
     "num_iters"),
    ("sinkhorn_iters_float", lambda: F.sinkhorn_plan(o(4, 2), o(4, 2), num_iters=10.5), T,
     "num_iters"),
    ("sinkhorn_shape", lambda: F.sinkhorn_plan(o(4, 2), o(3, 2)), V, "x0 and x1"),
    ("sinkhorn_empty", lambda: F.sinkhorn_plan(o(0, 2), o(0, 2)), V, "x0"),
    ("sinkhorn_str", lambda: F.sinkhorn_plan(np.array([["a"]]), o(1, 1)), T, "x0"),
    ("ot_pair_method", lambda: F.ot_pair(KEY, o(4, 2), o(4, 2), method="greedy"), V, "method"),
    ("ot_pair_shape", lambda: F.ot_pair(KEY, o(4, 2), o(4, 3)), V, "x0 and x1"),
    ("ot_pair_eps", lambda: F.ot_pair(KEY, o(4, 2), o(4, 2), eps=0.0), V, "eps"),
    ("cfm_loss_coupling", lambda: F.cfm_loss(None, coupling="ot"), V, "coupling"),
    ("cfm_loss_eps", lambda: F.cfm_loss(None, coupling="sinkhorn", ot_eps=-1.0), V, "ot_eps"),
    ("frechet_one_sample", lambda: F.frechet_distance(np.ones((1, 3)), np.ones((5, 3))), V,
     "feat_a"),
    ("frechet_one_sample_b", lambda: F.frechet_distance(np.random.randn(5, 3),
                                                        np.ones((1, 3))), V, "feat_b"),
    ("frechet_rank", lambda: F.frechet_distance(np.ones(5), np.ones((5, 1))), V, "feat_a"),
    ("frechet_features", lambda: F.frechet_distance(np.ones((5, 2)), np.ones((5, 3))), V,
     "feat_a and feat_b"),
    ("frechet_nan", lambda: F.frechet_distance(np.full((5, 2), np.nan), np.ones((5, 2))), V,
     "feat_a"),
    ("frechet_str", lambda: F.frechet_distance(np.array([["a", "b"]] * 3), np.ones((3, 2))),
     T, "feat_a"),
    ("mmd_rank", lambda: F.mmd_rbf(o(5), o(5, 1)), V, "x"),
    ("mmd_dim", lambda: F.mmd_rbf(o(5, 2), o(5, 3)), V, "x and y"),
    ("mmd_one_sample", lambda: F.mmd_rbf(o(1, 2), o(5, 2)), V, "samples"),
    ("mmd_bandwidth", lambda: F.mmd_rbf(o(5, 2), o(5, 2), bandwidths=(0.1, -1.0)), V,
     "bandwidths"),
    ("sliced_shape", lambda: F.sliced_wasserstein(KEY, o(5, 2), o(4, 2)), V, "x and y"),
    ("sliced_proj", lambda: F.sliced_wasserstein(KEY, o(5, 2), o(5, 2), num_projections=0),
     V, "num_projections"),
    ("odeint_steps_zero", lambda: F.odeint(_field, o(4, 2), 0), V, "n_steps"),
    ("odeint_steps_float", lambda: F.odeint(_field, o(4, 2), 2.5), V, "n_steps"),
    ("odeint_method", lambda: F.odeint(_field, o(4, 2), 2, method="heun"), V, "method"),
    ("odeint_rank", lambda: F.odeint(_field, jnp.float32(1.0), 2), V, "x0"),
    ("odeint_int_x0", lambda: F.odeint(_field, ints(4, 2), 2), T, "x0"),
    ("forward_map_steps", lambda: F.forward_map(_field, o(4, 2), -1), V, "n_steps"),
    ("inverse_map_method", lambda: F.inverse_map(_field, o(4, 2), 2, method="x"), V,
     "method"),
    ("logprob_estimator", lambda: F.logprob(_field, o(4, 2), n_steps=2, estimator="bogus"),
     V, "estimator"),
    ("logprob_probes", lambda: F.logprob(_field, o(4, 2), n_steps=2, estimator="hutchinson",
                                         key=KEY, num_probes=0), V, "num_probes"),
    ("logprob_hutch_nokey", lambda: F.logprob(_field, o(4, 2), n_steps=2,
                                              estimator="hutchinson"), V, "key"),
    ("gauss_sigma_t_s", lambda: F.gaussian_sigma_t(0.5, -1.0), V, "s"),
    ("gauss_slope_s", lambda: F.gaussian_field_slope(0.5, 0.0), V, "s"),
    ("gauss_min_cfm_s", lambda: F.gaussian_min_cfm_loss(-0.1), V, "s"),
    ("gauss_lip_s", lambda: F.gaussian_field_lipschitz(0.0), V, "s"),
    ("theorem1_taus", lambda: F.theorem1_bound(0.1, 1.0, 1.0, jnp.array([0.5, -0.5])), V,
     "taus"),
    ("time_embedding_dim", lambda: F.time_embedding(z(3), 0), V, "dim"),
    ("time_embedding_odd", lambda: F.time_embedding(z(3), 3), V, "dim"),
    ("velocity_mlp_x_rank", lambda: F.VelocityMLP(features=(4,)).init(KEY, z(3), 0.5), V,
     "x"),
    ("velocity_mlp_classes", lambda: F.VelocityMLP(features=(4,), num_classes=3).init(
        KEY, z(2, 2), 0.5, None), V, "c"),
    ("contracting_rate", lambda: F.ContractingResidual(rate=-1.0).init(KEY, z(2, 2), 0.5), V,
     "rate"),
    ("recon_nll_shape", lambda: F.gaussian_recon_nll(z(4, 2), z(3, 2), 0.0), V, "x1_hat"),
    ("make_pairs_pairing", lambda: F.make_pairs(z(4, 2), pairing="bogus"), V, "pairing"),
    ("make_pairs_independent", lambda: F.make_pairs(z(4, 2), pairing="independent"), V,
     "independent"),
    ("ftfm_steps", lambda: F.ftfm_loss(None, n_steps=0), V, "n_steps"),
    ("ftfm_method", lambda: F.ftfm_loss(None, n_steps=2, method="bogus"), V, "method"),
    ("ftfm_sigma", lambda: F.ftfm_loss(None, n_steps=2, sigma=-1.0), V, "sigma"),
    ("pair_distances_shape", lambda: F.pair_distances(_field, z(4, 2), z(3, 2), 2), V, "xb"),
    ("perturb_at_step", lambda: F.perturbation_deviation(_field, z(4, 2), z(4, 2), 2, 5), V,
     "at_step"),
    ("demonstrations_n", lambda: F.demonstrations(KEY, F.TwoGoalTask(), 0), V,
     "num_episodes"),
    ("two_goal_radius", lambda: F.TwoGoalTask(radius=-0.4), V, "TwoGoalTask.radius"),
    ("two_goal_speed_nan", lambda: F.TwoGoalTask(speed=float("nan")), V, "TwoGoalTask.speed"),
    ("two_goal_horizon", lambda: F.TwoGoalTask(horizon=0), V, "TwoGoalTask.horizon"),
    ("two_goal_goal_shape", lambda: F.TwoGoalTask(goal=(0.0, 2.0, 1.0)), V, "TwoGoalTask.goal"),
    ("two_goal_noise", lambda: F.TwoGoalTask(action_noise=-0.05), V, "TwoGoalTask.action_noise"),
]

# ---------------------------------------------------------------- scaling
SCALING = [
    ("teacher_d_zero", lambda: S.sample_teacher(KEY, 0), V, "d"),
    ("teacher_w_std", lambda: S.sample_teacher(KEY, 3, w_std=-1.0), V, "w_std"),
    ("inputs_num", lambda: S.sample_inputs(KEY, 0, 3), V, "num"),
    ("inputs_S", lambda: S.sample_inputs(KEY, 4, 3, S=0.0), V, "S"),
    ("training_data_w_rank", lambda: S.sample_training_data(KEY, z(2, 2), 5, 1.0, 0.1), V,
     "w_T"),
    ("training_data_sigma", lambda: S.sample_training_data(KEY, z(2), 5, 1.0, -0.1), V,
     "sigma"),
    ("training_data_n", lambda: S.sample_training_data(KEY, z(2), 0, 1.0, 0.1), V, "n"),
    ("fit_X_rank", lambda: S.fit_posterior(z(4), z(4), 0.5, 1.0), V, "X"),
    ("fit_y_shape", lambda: S.fit_posterior(z(4, 2), z(3), 0.5, 1.0), V, "y"),
    ("fit_sigma_zero", lambda: S.fit_posterior(z(4, 2), z(4), 0.0, 1.0), V, "sigma"),
    ("fit_gamma_neg", lambda: S.fit_posterior(z(4, 2), z(4), 0.5, -1.0), V, "gamma"),
    ("fit_X_nan", lambda: S.fit_posterior(jnp.full((4, 2), jnp.nan), z(4), 0.5, 1.0), V, "X"),
    ("fit_X_str", lambda: S.fit_posterior(np.array([["a", "b"]]), z(1), 0.5, 1.0), T, "X"),
    ("fit_empty", lambda: S.fit_posterior(z(0, 2), z(0), 0.5, 1.0), V, "X"),
    ("predictive_dim", lambda: S.predictive(_post(), z(5, 2)), V, "x"),
    ("predictive_type", lambda: S.predictive((z(3), z(3, 3), 1.0), z(5, 3)), T, "post"),
    ("judge_c_nan", lambda: S.judge_mean(z(3), z(3), float("nan")), V, "c"),
    ("draw_k_zero", lambda: S.draw_predictive(KEY, z(3), o(3), 0), V, "k"),
    ("draw_s2_neg", lambda: S.draw_predictive(KEY, z(3), -o(3), 2), V, "s2"),
    ("draw_s2_shape", lambda: S.draw_predictive(KEY, z(3), o(4), 2), V, "s2"),
    ("softmax_T_neg", lambda: S.softmax_weights(z(3, 4), z(3), -1.0), V, "T"),
    ("softmax_T_vec", lambda: S.softmax_weights(z(3, 4), z(3), jnp.ones(2)), V, "T"),
    ("softmax_mu_shape", lambda: S.softmax_weights(z(3, 4), z(4), 1.0), V, "mu_R"),
    ("sampler_error_mu_T", lambda: S.sampler_error(z(3, 4), z(5), z(3), 1.0), V, "mu_T"),
    ("renorm_ridge_a", lambda: S.renormalized_ridge(-1.0, 1.0, 0.1, 1.0), V, "a"),
    ("de_mean_var_sigma", lambda: S.de_mean_variance(1.0, 1.0, -0.1, 1.0), V, "sigma"),
    ("de_nodes_kind", lambda: S.de_nodes(1.0, 0.5, 1.0, 0.1, 1.0, 4.0, 10, kind="bogus"), V,
     "kind"),
    ("posterior_nodes_rule", lambda: S.posterior_nodes(_post(), z(3), 1.0, rule="bogus"), V,
     "rule"),
    ("exact_ks_zero", lambda: S.softmax_error_exact(0.1, 0.1, 1.0, 1.0, [0, 2]), V, "ks"),
    ("exact_ks_float", lambda: S.softmax_error_exact(0.1, 0.1, 1.0, 1.0, [1.5]), V, "ks"),
    ("exact_ks_empty", lambda: S.softmax_error_exact(0.1, 0.1, 1.0, 1.0, []), V, "ks"),
    ("exact_ks_2d", lambda: S.softmax_error_exact(0.1, 0.1, 1.0, 1.0, [[1, 2]]), V, "ks"),
    ("exact_T_neg", lambda: S.softmax_error_exact(0.1, 0.1, 1.0, -1.0, [2]), V, "T"),
    ("exact_T_inf", lambda: S.softmax_error_exact(0.1, 0.1, 1.0, float("inf"), [2]), V, "T"),
    ("exact_T_vec", lambda: S.softmax_error_exact(0.1, 0.1, 1.0, jnp.ones(2), [2]), V, "T"),
    ("exact_s2_zero", lambda: S.softmax_error_exact(0.1, 0.1, 0.0, 1.0, [2]), V, "s2"),
    ("exact_delta_nan", lambda: S.softmax_error_exact(float("nan"), 0.1, 1.0, 1.0, [2]), V,
     "delta_T"),
    ("exact_vector_point", lambda: S.softmax_error_exact(z(2), 0.1, 1.0, 1.0, [2]), V,
     "delta_T"),
    ("bok_ks", lambda: S.best_of_k_exact(0.1, 0.1, 1.0, [-1]), V, "ks"),
    ("bok_s2", lambda: S.best_of_k_exact(0.1, 0.1, -1.0, [2]), V, "s2"),
    ("averaged_nodes_type", lambda: S.softmax_error_averaged("nodes", [1.0], [2]), T,
     "nodes"),
    ("averaged_nodes_shape", lambda: S.softmax_error_averaged((z(3), z(3), o(2), o(3)),
                                                               [1.0], [2]), V, "nodes"),
    ("averaged_temps_neg", lambda: S.softmax_error_averaged(_nodes(), [-1.0], [2]), V,
     "temps"),
    ("bok_averaged_ks", lambda: S.best_of_k_averaged(_nodes(), [0]), V, "ks"),
    ("expansion_T_zero", lambda: S.expansion_coefficients(0.1, 0.1, 1.0, 0.0), V, "T"),
    ("expansion_in_k_ks", lambda: S.expansion_in_k((1.0, 0.0, 0.0, 0.0), [0]), V, "ks"),
    ("high_T_s2", lambda: S.high_temperature_expansion(0.1, 0.1, -1.0, 10.0, [2]), V, "s2"),
    ("opt_T_k", lambda: S.optimal_temperature_formula(1.0, 1.0, 2, 1.0), V, "k"),
    ("opt_T_s2", lambda: S.optimal_temperature_formula(1.0, 1.0, 5, -1.0), V, "s2"),
    ("minimize_lo_hi", lambda: S.minimize_log_scalar(lambda x: x, 2.0, 1.0), V, "lo < hi"),
    ("minimize_lo_neg", lambda: S.minimize_log_scalar(lambda x: x, -1.0, 1.0), V, "lo"),
    ("evt_pointwise_k", lambda: S.extreme_value_pointwise(0.1, 1.0, 0), V, "k"),
    ("evt_averaged_sigma", lambda: S.extreme_value_averaged(0.0, 0.1, 10), V, "sigma"),
    ("evt_averaged_mds", lambda: S.extreme_value_averaged(1.0, -0.1, 10), V,
     "mean_delta_sq"),
    ("large_k_T", lambda: S.large_k_limit(0.1, 0.1, 1.0, -1.0), V, "T"),
    ("optimal_k_shape", lambda: S.optimal_k(np.ones(3), [1, 2]), V, "values"),
    ("mc_points_trials", lambda: S.mc_delta_points(KEY, z(2), z(2), o(2), [2], [1.0], 0), V,
     "num_trials"),
    ("mc_points_shape", lambda: S.mc_delta_points(KEY, z(2), z(3), o(2), [2], [1.0], 4), V,
     "delta_R"),
    ("mc_points_ks", lambda: S.mc_delta_points(KEY, z(2), z(2), o(2), [0], [1.0], 4), V, "ks"),
    ("stream_chunk", lambda: S.stream_test_points(KEY, lambda *a: {}, 8, 0, 3), V,
     "chunk_size"),
    ("stream_points", lambda: S.stream_test_points(KEY, lambda *a: {}, 0, 4, 3), V,
     "num_points"),
    ("delta_mc_num_test", lambda: S.delta_monte_carlo(KEY, _post(), z(3), 1.0, [2], [1.0],
                                                      num_test=0, num_trials=2), V,
     "num_test"),
    ("delta_mc_w_T", lambda: S.delta_monte_carlo(KEY, _post(), z(4), 1.0, [2], [1.0],
                                                 num_test=4, num_trials=2), V, "w_T"),
]

# ---------------------------------------------------------------- icl
ICL = [
    ("prior_a0", lambda: I.NormalGammaPrior(a0=0.0), V, "a0"),
    ("prior_b0", lambda: I.NormalGammaPrior(b0=-1.0), V, "b0"),
    ("prior_mu0_nan", lambda: I.NormalGammaPrior(mu0=float("nan")), V, "mu0"),
    ("prior_a0_str", lambda: I.NormalGammaPrior(a0="20"), T, "a0"),
    ("sample_tasks_n", lambda: I.sample_tasks(KEY, 0, 3), V, "num_tasks"),
    ("sample_tasks_dim", lambda: I.sample_tasks(KEY, 2, 2.5), T, "dim"),
    ("sample_tasks_prior", lambda: I.sample_tasks(KEY, 2, 3, prior=(20.0, 20.0)), T, "prior"),
    ("make_pool_size", lambda: I.make_pool(KEY, 0, 3), V, "num_tasks"),
    ("covariates_kind", lambda: I.sample_covariates(KEY, 1, 2, 3, "bogus"), V, "covariates"),
    ("covariates_length", lambda: I.sample_covariates(KEY, 1, 0, 3), V, "length"),
    ("sample_batch_size", lambda: I.sample_batch(KEY, 0, 4, 3), V, "batch_size"),
    ("sample_batch_pool_dim", lambda: I.sample_batch(KEY, 2, 3, 3,
                                                     pool=I.make_pool(KEY, 4, 2)), V, "pool"),
    ("prompt_mask_train", lambda: I.prompt_length_mask(5, 6), V, "train_length"),
    ("prompt_mask_length", lambda: I.prompt_length_mask(0, 0), V, "length"),
    ("transformer_embd_head", lambda: I.ICLTransformer(n_dims=3, n_positions=5, n_embd=10,
                                                       n_head=4), V, "n_embd"),
    ("transformer_pos_enc", lambda: I.ICLTransformer(n_dims=3, n_positions=5,
                                                     pos_encoding="rope"), V, "pos_encoding"),
    ("transformer_scale_head", lambda: I.ICLTransformer(n_dims=3, n_positions=5,
                                                        scale_head="exp"), V, "scale_head"),
    ("transformer_window", lambda: I.ICLTransformer(n_dims=3, n_positions=5, window=0), V,
     "window"),
    ("make_model_preset", lambda: I.make_model("huge", 3, 5), V, "preset"),
    ("interleave_shape", lambda: I.interleave(z(2, 4, 3), z(2, 3)), V, "ys"),
    ("pair_tokens_shape", lambda: I.pair_tokens(z(2, 4, 3), z(3, 4)), V, "ys"),
    ("attention_mask_tokens", lambda: I.attention_mask(0, None), V, "num_tokens"),
    ("attention_mask_window", lambda: I.attention_mask(8, -1), V, "window"),
    ("check_prompt_dim", lambda: I.check_prompt(z(2, 4, 4), z(2, 4), 3), V, "dimension"),
    ("check_prompt_long", lambda: I.check_prompt(z(2, 6, 3), z(2, 6), 3, 5), V, "maximum"),
    ("gaussian_nll_shape", lambda: I.gaussian_nll(z(2, 4), o(2, 4), z(2, 3)), V, "y"),
    ("gaussian_nll_floor", lambda: I.gaussian_nll(z(2, 4), o(2, 4), z(2, 4), var_floor=-1.0),
     V, "var_floor"),
    ("ng_xs_rank", lambda: _ng(z(4, 3), z(4)), V, "xs"),
    ("ng_ys_shape", lambda: _ng(z(2, 4, 3), z(2, 3)), V, "ys"),
    ("ng_prior_type", lambda: _ng(z(2, 4, 3), z(2, 4), prior=(20.0, 20.0, 1.0)), T, "prior"),
    ("ng_window_zero", lambda: _ng(z(2, 4, 3), z(2, 4), window=0), V, "window"),
    ("ng_window_float", lambda: _ng(z(2, 4, 3), z(2, 4), window=1.5), T, "window"),
    ("ng_xs_str", lambda: _ng(np.full((1, 2, 1), "a"), z(1, 2)), T, "xs"),
    ("pool_bayes_w_shape", lambda: I.pool_bayes_predictive(z(2, 4, 3), z(2, 4), z(5, 2),
                                                           o(5)), V, "pool_w"),
    ("pool_bayes_sigma_shape", lambda: I.pool_bayes_predictive(z(2, 4, 3), z(2, 4), z(5, 3),
                                                               o(4)), V, "pool_sigma"),
    ("pool_bayes_sigma_neg", lambda: I.pool_bayes_predictive(z(2, 4, 3), z(2, 4), z(5, 3),
                                                             -o(5)), V, "pool_sigma"),
    ("ridge_alpha_zero", lambda: I.ridge_predictive(z(2, 4, 3), z(2, 4), alpha=0.0), V,
     "alpha"),
    ("ridge_alpha_nan", lambda: I.ridge_predictive(z(2, 4, 3), z(2, 4), alpha=float("nan")),
     V, "alpha"),
    ("ridge_window", lambda: I.ridge_predictive(z(2, 4, 3), z(2, 4), window=-2), V, "window"),
    ("ols_xs_rank", lambda: I.ols_predictive(z(2, 4), z(2, 4)), V, "xs"),
    ("uq_shape", lambda: I.uq_metrics(z(2, 4), o(2, 4), z(2, 3)), V, "y"),
    ("uq_level", lambda: I.uq_metrics(z(2, 4), o(2, 4), z(2, 4), level=1.5), V, "level"),
    ("uq_var_neg", lambda: I.uq_metrics(z(2, 4), -o(2, 4), z(2, 4)), V, "var"),
    ("two_sided_dof", lambda: I.two_sided_prob(z(3), dof=-1.0), V, "dof"),
    ("position_average_type", lambda: I.position_average([1, 2]), T, "metrics"),
    ("predict_batch", lambda: I.predict(None, None, z(2, 4, 3), z(2, 4), batch_size=0), V,
     "batch_size"),
]

# ---------------------------------------------------------------- repri
SF = z(1, 4, 4, 3)          # (K, h, w, C) support features of one task
SM = ints(1, 8, 8)          # (K, H, W) support masks
QF = z(4, 4, 3)             # (h, w, C) query features
QV = jnp.ones((8, 8), bool)
REPRI = [
    ("repri_support_rank", lambda: R.repri(z(4, 4, 3), SM, QF, QV), V, "support_feats"),
    ("repri_mask_rank", lambda: R.repri(SF, ints(8, 8), QF, QV), V, "support_masks"),
    ("repri_shots_mismatch", lambda: R.repri(z(2, 4, 4, 3), SM, QF, QV), V, "support"),
    ("repri_channels", lambda: R.repri(SF, SM, z(4, 4, 5), QV), V, "query_feats"),
    ("repri_labels_range", lambda: R.repri(SF, jnp.full((1, 8, 8), 7, jnp.int32), QF, QV), V,
     "support_masks"),
    ("repri_labels_float", lambda: R.repri(SF, z(1, 8, 8), QF, QV), T, "support_masks"),
    ("repri_no_fg", lambda: R.repri(o(1, 4, 4, 3), SM, QF, QV), V, "foreground"),
    ("repri_nan_feats", lambda: R.repri(jnp.full((1, 4, 4, 3), jnp.nan), SM, QF, QV), V,
     "support_feats"),
    ("repri_k_zero", lambda: R.repri(z(0, 4, 4, 3), ints(0, 8, 8), QF, QV), V, "K"),
    ("repri_valid_none", lambda: R.repri(o(1, 4, 4, 3), jnp.ones((1, 8, 8), jnp.int32), QF,
                                         jnp.zeros((8, 8), bool)), V, "query_valid"),
    ("repri_pi_range", lambda: R.repri(o(1, 4, 4, 3), jnp.ones((1, 8, 8), jnp.int32), o(4, 4, 3),
                                       QV, pi=1.5), V, "pi"),
    ("repri_config_type", lambda: R.repri(SF, SM, QF, QV, config={"lr": 0.1}), T, "config"),
    ("repri_config_lr", lambda: R.RePRIConfig(lr=-0.1), V, "lr"),
    ("repri_config_updates", lambda: R.RePRIConfig(num_updates=-1), V, "num_updates"),
    ("repri_config_temp", lambda: R.RePRIConfig(temperature=0.0), V, "temperature"),
    ("repri_batch_rank", lambda: R.repri_batch(SF, SM, QF, QV), V, "support_feats"),
    ("predict_size", lambda: R.predict(R.Classifier(o(3), z()), QF, (0, 8)), V,
     "image_size"),
    ("predict_feats_rank", lambda: R.predict(R.Classifier(o(3), z()), z(4, 3), (8, 8)), V,
     "query_feats"),
    ("oracle_pi_size", lambda: R.oracle_pi(ints(8, 8), (0, 4)), V, "feature_size"),
    ("oracle_pi_rank", lambda: R.oracle_pi(ints(8), (4, 4)), V, "query_mask"),
    ("cosine_channels", lambda: R.cosine_logits(z(4, 4, 3), o(5), 20.0), V, "prototype"),
    ("cosine_temp", lambda: R.cosine_logits(z(4, 4, 3), o(3), -1.0), V, "temperature"),
    ("downsample_rank", lambda: R.downsample_mask(ints(8), (4, 4)), V, "mask"),
    ("downsample_size", lambda: R.downsample_mask(ints(8, 8), (0, 4)), V, "size"),
    ("upsample_size", lambda: R.upsample_bilinear(z(4, 4), (8, -1)), V, "size"),
    ("nearest_in", lambda: R.nearest_indices(0, 4), V, "in_size"),
    ("nearest_out", lambda: R.nearest_indices(4, 0), V, "out_size"),
    ("init_iou_classes", lambda: R.init_iou_sums(0), V, "num_classes"),
    ("inter_union_shape", lambda: R.intersection_union(ints(4, 4), ints(4, 5)), V, "target"),
    ("accumulate_classes", lambda: R.accumulate_iou(R.init_iou_sums(3), z(2), z(2),
                                                    jnp.array([0, 5])), V, "classes"),
    ("scene_canvas", lambda: R.SceneConfig(canvas=0), V, "canvas"),
    ("scene_digits", lambda: R.SceneConfig(min_digits=3, max_digits=2), V, "min_digits"),
    ("fold_classes_range", lambda: R.fold_classes(7), V, "fold"),
    ("digit_bank_split", lambda: R.digit_bank("validation", 14), V, "split"),
    ("pixel_ce_shape", lambda: R.pixel_cross_entropy(z(2, 4, 4, 3), ints(2, 4, 5)), V,
     "labels"),
    ("pixel_ce_range", lambda: R.pixel_cross_entropy(z(2, 4, 4, 3),
                                                     jnp.full((2, 4, 4), 3, jnp.int32)), V,
     "labels"),
    ("segnet_classes", lambda: R.SegNet(num_classes=0).init(KEY, z(1, 8, 8, 1)), V,
     "num_classes"),
]

# ---------------------------------------------------------------- deup
DEUP = [
    ("mlp_cfg_steps", lambda: D.MLPConfig(steps=0), V, "steps"),
    ("mlp_cfg_lr", lambda: D.MLPConfig(lr=-1.0), V, "lr"),
    ("mlp_cfg_dropout", lambda: D.MLPConfig(dropout=1.0), V, "dropout"),
    ("mlp_cfg_activation", lambda: D.MLPConfig(activation="swish"), V, "activation"),
    ("mlp_cfg_hidden", lambda: D.MLPConfig(hidden=(0,)), V, "hidden"),
    ("predictor_task", lambda: D.Predictor(task="ranking"), V, "task"),
    ("predictor_classes", lambda: D.Predictor(task="classification", num_classes=1), V,
     "num_classes"),
    ("predictor_members", lambda: D.Predictor(num_members=0), V, "num_members"),
    ("predictor_mc", lambda: D.Predictor(mc_samples=-1), V, "mc_samples"),
    ("feature_cfg_none", lambda: D.FeatureConfig(use_x=False, density=False, distance=False),
     V, "no feature"),
    ("feature_cfg_bandwidth", lambda: D.FeatureConfig(bandwidth=0.0), V, "bandwidth"),
    ("feature_cfg_seen_eps", lambda: D.FeatureConfig(seen_eps=-1.0), V, "seen_eps"),
    ("feature_cfg_x_dims_neg", lambda: D.FeatureConfig(x_dims=(-1,)), V, "x_dims"),
    ("feature_cfg_x_dims_empty", lambda: D.FeatureConfig(x_dims=()), V, "x_dims"),
    ("features_x_dims_range", lambda: D.compute_features(D.FeatureConfig(x_dims=(5,)),
                                                         z(3, 2), z(4, 2), o(4, dtype=bool)),
     V, "x_dims"),
    ("features_ref_cols", lambda: D.compute_features(D.FeatureConfig(), z(3, 2), z(4, 3),
                                                     o(4, dtype=bool)), V, "ref_x"),
    ("features_mask_shape", lambda: D.compute_features(D.FeatureConfig(), z(3, 2), z(4, 2),
                                                       o(3, dtype=bool)), V, "ref_mask"),
    ("features_query_rank", lambda: D.compute_features(D.FeatureConfig(), z(3), z(4, 2),
                                                       o(4, dtype=bool)), V, "query"),
    ("features_log_var_missing", lambda: D.compute_features(D.FeatureConfig(variance=True),
                                                            z(3, 2), z(4, 2),
                                                            o(4, dtype=bool)), V, "log_var"),
    ("features_log_var_shape", lambda: D.compute_features(D.FeatureConfig(variance=True),
                                                          z(3, 2), z(4, 2), o(4, dtype=bool),
                                                          log_var=z(4)), V, "log_var"),
    ("features_cfg_type", lambda: D.compute_features({}, z(3, 2), z(4, 2), o(4, dtype=bool)),
     T, "cfg"),
    ("distance_cols", lambda: D.distance_to_data(z(3, 2), z(4, 3), o(4, dtype=bool)), V,
     "ref_x"),
    ("kde_bandwidth", lambda: D.kde_log_density(z(3, 2), z(4, 2), o(4, dtype=bool), -1.0), V,
     "bandwidth"),
    ("seen_bit_eps", lambda: D.seen_bit(z(3, 2), z(4, 2), o(4, dtype=bool), eps=-1.0), V,
     "eps"),
    ("scott_rank", lambda: D.scott_bandwidth(z(4), o(4, dtype=bool)), V, "ref_x"),
    ("pointwise_kind", lambda: D.pointwise_loss("hinge", z(3, 1), z(3)), V, "loss"),
    ("pointwise_label_range", lambda: D.pointwise_loss("xent", z(3, 2), jnp.array([0, 1, 2])),
     V, "y"),
    ("fit_mlp_loss", lambda: D.fit_mlp(_mlp(), KEY, z(4, 2), z(4), o(4), loss="l1"), V,
     "loss"),
    ("fit_mlp_x_rank", lambda: D.fit_mlp(_mlp(), KEY, z(4), z(4), o(4)), V, "x"),
    ("fit_mlp_batch", lambda: D.fit_mlp(_mlp(), KEY, z(4, 2), z(3), o(4)), V, "batch"),
    ("fit_mlp_weights_neg", lambda: D.fit_mlp(_mlp(), KEY, z(4, 2), z(4), -o(4)), V,
     "weights"),
    ("fit_mlp_labels", lambda: D.fit_mlp(_mlp(), KEY, z(4, 2), jnp.array([0, 1, 2, 3]), o(4),
                                         loss="xent", out=3), V, "y"),
    ("fit_mlp_out", lambda: D.fit_mlp(_mlp(), KEY, z(4, 2), z(4), o(4), out=0), V, "out"),
    ("fit_ensemble_members", lambda: D.fit_ensemble(_mlp(), KEY, z(4, 2), z(4), o(4), 0), V,
     "num_members"),
    ("mc_dropout_cfg", lambda: D.mc_dropout_outputs(_mlp(), {}, z(3, 2), KEY, 4), V,
     "dropout"),
    ("fit_predictor_labels", lambda: D.fit_predictor(_clf_pred(), KEY, z(4, 2),
                                                     jnp.array([0, 1, 2, 3]), o(4)), V, "y"),
    ("fit_predictor_label_neg", lambda: D.fit_predictor(_clf_pred(), KEY, z(4, 2),
                                                        jnp.array([0, -1, 2, 1]), o(4)), V,
     "y"),
    ("fit_predictor_float_labels", lambda: D.fit_predictor(_clf_pred(), KEY, z(4, 2), z(4),
                                                           o(4)), T, "y"),
    ("loss_of_labels", lambda: D.loss_of(_clf_pred(), o(4, 3) / 3, jnp.array([0, 1, 2, 3])),
     V, "y"),
    ("loss_of_pred_shape", lambda: D.loss_of(_clf_pred(), o(4, 2) / 2, ints(4)), V, "pred"),
    ("loss_of_reg_shape", lambda: D.loss_of(D.Predictor(), z(4), z(3)), V, "batch"),
    ("kfold_labels", lambda: D.kfold_error_data(_clf_pred(), D.FeatureConfig(), KEY, z(4, 2),
                                                jnp.array([0, 1, 2, 3]), ints(4), 2), V, "y"),
    ("kfold_fold_range", lambda: D.kfold_error_data(D.Predictor(mlp=_mlp()),
                                                    D.FeatureConfig(), KEY, z(4, 2), z(4),
                                                    jnp.array([0, 1, 2, 0]), 2), V, "fold"),
    ("kfold_fold_shape", lambda: D.kfold_error_data(D.Predictor(mlp=_mlp()),
                                                    D.FeatureConfig(), KEY, z(4, 2), z(4),
                                                    ints(3), 2), V, "fold"),
    ("kfold_num_folds", lambda: D.kfold_error_data(D.Predictor(mlp=_mlp()),
                                                   D.FeatureConfig(), KEY, z(4, 2), z(4),
                                                   ints(4), 0), V, "num_folds"),
    ("kfold_x_rank", lambda: D.kfold_error_data(D.Predictor(mlp=_mlp()), D.FeatureConfig(),
                                                KEY, z(4), z(4), ints(4), 2), V, "x"),
    ("kfold_y_shape", lambda: D.kfold_error_data(D.Predictor(mlp=_mlp()), D.FeatureConfig(),
                                                 KEY, z(4, 2), z(3), ints(4), 2), V, "y"),
    ("kfold_x_nan", lambda: D.kfold_error_data(D.Predictor(mlp=_mlp()), D.FeatureConfig(),
                                               KEY, jnp.full((4, 2), jnp.nan), z(4),
                                               jnp.array([0, 1, 0, 1]), 2), V, "x"),
    ("kfold_mask_shape", lambda: D.kfold_error_data(D.Predictor(mlp=_mlp()),
                                                    D.FeatureConfig(), KEY, z(4, 2), z(4),
                                                    jnp.array([0, 1, 0, 1]), 2,
                                                    train_mask=o(3, dtype=bool)), V,
     "train_mask"),
    ("random_folds_k", lambda: D.random_folds(KEY, 5, 1), V, "num_folds"),
    ("random_folds_big", lambda: D.random_folds(KEY, 3, 5), V, "num_folds"),
    ("empty_ed_rows", lambda: D.empty_error_data(-1, 2, 4), V, "num_rows"),
    ("empty_ed_features", lambda: D.empty_error_data(2, 0, 4), V, "num_features"),
    ("set_row_range", lambda: D.set_row(_ed(), 9, z(2), 0.1, 0, 0, o(4, dtype=bool)), V, "r"),
    ("set_row_phi", lambda: D.set_row(_ed(), 0, z(3), 0.1, 0, 0, o(4, dtype=bool)), V, "phi"),
    ("concat_ed_empty", lambda: D.concat_error_data(), V, "eds"),
    ("concat_ed_features", lambda: D.concat_error_data(_ed(feats=2), _ed(feats=3)), V,
     "phi"),
    ("error_cfg_target", lambda: D.ErrorConfig(target="sqrt"), V, "target"),
    ("loss_to_target_neg", lambda: D.loss_to_target(D.ErrorConfig(), -o(3)), V, "loss"),
    ("predict_error_phi", lambda: D.predict_error(D.ErrorConfig(), None, z(3)), V, "phi"),
    ("rollout_n", lambda: F.rollout(KEY, F.TwoGoalTask(), None, -1), V, "num_episodes"),
    ("epistemic_shape", lambda: D.epistemic_uncertainty(z(3), z(4)), V, "a"),
    ("excess_sq_shape", lambda: D.excess_risk_squared(z(3), z(4)), V, "mu"),
    ("excess_log_shape", lambda: D.excess_risk_log_loss(o(3, 2) / 2, o(3, 3) / 3), V,
     "f_probs"),
    ("fit_gp_mask", lambda: D.fit_gp(z(4, 1), z(4), o(3, dtype=bool)), V, "mask"),
    ("fit_gp_steps", lambda: D.fit_gp(z(4, 1), z(4), o(4, dtype=bool), steps=0), V, "steps"),
    ("gp_init_dim", lambda: D.gp_init(0), V, "dim"),
    ("gp_init_ls", lambda: D.gp_init(2, lengthscale=-1.0), V, "lengthscale"),
    ("gp_posterior_xq", lambda: D.gp_posterior(D.gp_init(2), z(4, 2), z(4), o(4, dtype=bool),
                                               z(3, 3)), V, "xq"),
    ("rbf_cols", lambda: D.rbf_kernel(z(3, 2), z(4, 3), z(2), 0.0), V, "x2"),
    ("known_noise_n", lambda: D.known_noise(0.1, 0), V, "n"),
    ("known_noise_neg", lambda: D.known_noise(-0.1, 3), V, "noise_var"),
    ("zero_aleatoric_n", lambda: D.zero_aleatoric(-1), V, "n"),
    ("repeat_variance_reps", lambda: D.repeat_variance(z(3, 1)), V, "y_reps"),
    ("fit_hetero_rank", lambda: D.fit_heteroscedastic(_mlp(), KEY, z(4), z(4)), V, "x"),
    ("log_variance_axis", lambda: D.log_variance(z(3, 4), axis=3), V, "axis"),
    ("ei_shape", lambda: D.expected_improvement(z(3), o(4), 0.0), V, "std"),
    ("ei_std_neg", lambda: D.expected_improvement(z(3), -o(3), 0.0), V, "std"),
    ("smo_cfg_init", lambda: D.SMOConfig(n_init=0), V, "n_init"),
    ("smo_cfg_candidates", lambda: D.SMOConfig(num_candidates=0), V, "num_candidates"),
    ("run_smo_method", lambda: D.run_smo("bogus", D.MULTI_OPTIMA, D.SMOConfig(), KEY), V,
     "method"),
    ("objective_bounds", lambda: D.Objective("f", lambda u: u, (1.0,), (0.0,), 0.0), V,
     "lower"),
    ("deup_config_type", lambda: D.fit_deup("cfg", KEY, z(4, 2), z(4)), T, "cfg"),
    ("deup_predict_state", lambda: D.deup_predict(D.DEUPConfig(), None, z(3)), T, "state"),
]


# ---------------------------------------------------------------- found after the first pass
MORE = [
    ("icl-prompts_sigma_neg", lambda: I.sample_prompts(KEY, z(3, 2), -o(3), 5), V, "sigma"),
    ("icl-prompts_mismatch", lambda: I.sample_prompts(KEY, z(3, 2), o(4), 5), V, "sigma"),
    ("icl-batch_fn_size", lambda: I.make_batch_fn(0, 5, 2), V, "batch_size"),
    ("flow-cfm_objective_shape", lambda: F.cfm_objective(_field, z(4, 2), z(3, 2), z(4)), V,
     "x1"),
    ("flow-cfm_objective_t", lambda: F.cfm_objective(_field, z(4, 2), z(4, 2), z(3)), V, "t"),
    ("flow-divergence_probes", lambda: F.divergence(_field, z(4, 2), 0.5,
                                                    probes=z(2, 3, 3)), V, "probes"),
    ("flow-gmm_mixture", lambda: F.gmm_optimal_field(z(4, 3), 0.5, None), T, "mixture"),
    ("flow-gmm_log_prob_mixture", lambda: F.gmm_log_prob_t(z(4, 3), 0.5, {}), T, "mixture"),
    ("flow-odeint_t0_nan", lambda: F.odeint(_field, z(2, 2), 2, t0=float("nan")), V, "t0"),
    ("flow-odeint_t1_inf", lambda: F.odeint(_field, z(2, 2), 2, t1=float("inf")), V, "t1"),
    ("flow-reference_rtol", lambda: F.odeint_reference(_field, z(2, 2), rtol=-1.0), V, "rtol"),
    ("flow-reference_max_steps", lambda: F.odeint_reference(_field, z(2, 2), max_steps=0), V,
     "max_steps"),
    ("flow-recon_dim", lambda: F.init_recon_params({}, learn_sigma=True, dim=0), V, "dim"),
    ("flow-make_pairs_chunk", lambda: F.make_pairs(z(4, 2), pairing="data", x0=z(4, 2),
                                                   chunk_size=0), V, "chunk_size"),
    ("flow-make_pairs_x0", lambda: F.make_pairs(z(4, 2), pairing="data", x0=z(3, 2)), V,
     "x0"),
    ("flow-lmi_rate", lambda: F.lmi_certificate(z(2, 2), -1.0), V, "rate"),
    ("flow-lmi_shape", lambda: F.lmi_certificate(z(2, 3), 1.0), V, "matrix"),
    ("flow-accel_s", lambda: F.gaussian_path_acceleration_max(-1.0, 1.0), V, "s"),
    ("flow-trajectory_steps", lambda: F.trajectory_jacobian_norms(_field, z(2, 2), 0), V,
     "n_steps"),
    ("scaling-de_paper_d", lambda: S.de_error_paper(1.0, 1.0, 1.0, 0), V, "d"),
    ("scaling-de_ridge_a", lambda: S.de_error_ridge(-1.0, 1.0, 1.0, 0.1, 1.0, 10), V, "a"),
    ("scaling-de_predictive_xnorm", lambda: S.de_predictive(0.0, -1.0, 1.0, 1.0, 0.1, 1.0),
     V, "xnorm2"),
    ("scaling-post_nodes_num", lambda: S.posterior_nodes(_post(), z(3), 1.0, num=0), V,
     "num"),
    ("scaling-exact_num_t", lambda: S.softmax_error_exact(0.1, 0.1, 1.0, 1.0, [2], num_t=1),
     V, "num_t"),
    ("scaling-exact_z_max", lambda: S.softmax_error_exact(0.1, 0.1, 1.0, 1.0, [2],
                                                          z_max=-1.0), V, "z_max"),
    ("scaling-minimize_iters", lambda: S.minimize_log_scalar(lambda x: x, 1.0, 2.0,
                                                             iters=-1), V, "iters"),
    ("scaling-mc_temps", lambda: S.mc_delta_points(KEY, z(2), z(2), o(2), [2], [-1.0], 4), V,
     "temps"),
    ("repri-batch_pi_shape", lambda: R.repri_batch(o(2, 1, 4, 4, 3), jnp.ones((2, 1, 8, 8),
                                                                               jnp.int32),
                                                   o(2, 4, 4, 3), jnp.ones((2, 8, 8), bool),
                                                   pi=o(3) * 0.5), V, "pi"),
    ("repri-estimate_pi_channels", lambda: R.estimate_pi(R.Classifier(o(3), z()), o(4, 4, 5),
                                                         jnp.ones((4, 4), bool), 20.0), V,
     "prototype"),
    ("repri-fb_iou_type", lambda: R.fb_iou(None), T, "sums"),
    ("repri-mean_iou_type", lambda: R.mean_iou({}), T, "sums"),
    ("repri-class_iou_type", lambda: R.class_iou((1, 2)), T, "sums"),
    ("ghost_bn-bnmlp_classes", lambda: G.BNMLP(features=(4,), num_classes=0).init(
        KEY, z(4, 3), train=False), V, "num_classes"),
    ("ghost_bn-bnmlp_features", lambda: G.BNMLP(features=(4, 0)).init(KEY, z(4, 3),
                                                                       train=False), V,
     "features"),
    ("ghost_bn-steps_float", lambda: G.steps_per_epoch(10, 2.5), T, "batch_size"),
    ("deup-apply_mlp_x", lambda: D.apply_mlp(_mlp(), {}, z(3)), V, "x"),
    ("deup-hetero_predict_x", lambda: D.predict_heteroscedastic(_mlp(), {}, z(3)), V, "x"),
    ("deup-repeat_x", lambda: D.fit_repeat_aleatoric(_mlp(), KEY, z(3, 2), z(4, 2)), V,
     "y_reps"),
    ("deup-fit_error_type", lambda: D.fit_error_predictor(D.ErrorConfig(), KEY, None), T,
     "ed"),
    ("deup-init_error_type", lambda: D.init_error_predictor(D.ErrorConfig(), KEY, "ed"), T,
     "ed"),
    ("deup-leaked_type", lambda: D.leaked_rows(None), T, "ed"),
    ("deup-init_predictor_x", lambda: D.init_predictor(D.Predictor(), KEY, z(3)), V, "x"),
    ("deup-multi_optima_rank", lambda: D.multi_optima(z(3)), V, "x"),
    ("deup-levy_rank", lambda: D.neg_levy_n13(z(3)), V, "x"),
    ("deup-config_folds", lambda: D.DEUPConfig(num_folds=1), V, "num_folds"),
]

# ---------------------------------------------------------------- runner / config
def _cfg(name, *overrides):
    return lambda: check_config(name, apply_overrides(load_config(f"{name}:quick"),
                                                      list(overrides)))


def _run(*argv):
    from gapjax.run import main
    return lambda: main(list(argv))


RUNNER = [
    ("gbn_lr_neg", _cfg("ghost_bn", "lr=-0.01"), V, "config.lr "),
    ("gbn_small_batch_zero", _cfg("ghost_bn", "small_batch=0"), V, "small_batch"),
    ("gbn_small_batch_indiv", _cfg("ghost_bn", "small_batch=30"), V, "small_batch"),
    ("gbn_seeds_zero", _cfg("ghost_bn", "seeds=0"), V, "seeds"),
    ("gbn_epochs_neg", _cfg("ghost_bn", "epochs=-1"), V, "epochs"),
    ("gbn_test_fraction", _cfg("ghost_bn", "test_fraction=1.5"), V, "test_fraction"),
    ("gbn_momentum", _cfg("ghost_bn", "momentum=1.0"), V, "momentum"),
    ("gbn_bn_momentum", _cfg("ghost_bn", "bn_momentum=-0.5"), V, "bn_momentum"),
    ("gbn_running_stats", _cfg("ghost_bn", "running_stats=median"), V, "running_stats"),
    ("gbn_features_empty", _cfg("ghost_bn", "features=()"), V, "features"),
    ("gbn_features_zero", _cfg("ghost_bn", "features=(0,)"), V, "features"),
    ("gbn_wd_neg", _cfg("ghost_bn", "weight_decay=-1e-4"), V, "weight_decay"),
    ("gbn_clip_zero", _cfg("ghost_bn", "clip_norm=0.0"), V, "clip_norm"),
    ("gbn_drop_fraction", _cfg("ghost_bn", "lr_drop_fractions=(0.2,1.2)"), V,
     "lr_drop_fractions"),
    ("gbn_lr_nan", _cfg("ghost_bn", "lr=nan"), V, "lr"),
    ("icl_lr_neg", _cfg("icl", "lr=-0.01"), V, "config.lr "),
    ("icl_dim_zero", _cfg("icl", "dim=0"), V, "dim"),
    ("icl_prompt_length", _cfg("icl", "prompt_length=0"), V, "prompt_length"),
    ("icl_a0", _cfg("icl", "a0=0.0"), V, "a0"),
    ("icl_n_head", _cfg("icl", "n_head=3"), V, "n_head"),
    ("icl_batch", _cfg("icl", "batch_size=0"), V, "batch_size"),
    ("icl_window_neg", _cfg("icl", "window=-1"), V, "window"),
    ("icl_covariates", _cfg("icl", "covariates=bogus"), V, "covariates"),
    ("icl_token_format", _cfg("icl", "token_format=bogus"), V, "token_format"),
    ("icl_train_length", _cfg("icl", "train_length=99"), V, "train_length"),
    ("icl_grad_clip", _cfg("icl", "grad_clip=-1.0"), V, "grad_clip"),
    ("icl_mu0_inf", _cfg("icl", "mu0=inf"), V, "mu0"),
    ("icl_eval_tasks", _cfg("icl", "eval_tasks=0"), V, "eval_tasks"),
    ("flow_lr", _cfg("flow", "toy.lr=-1.0"), V, "toy.lr"),
    ("flow_n_steps", _cfg("flow", "toy.n_steps=(0,2)"), V, "toy.n_steps"),
    ("flow_dataset", _cfg("flow", "toy.datasets=('swissroll',)"), V, "toy.datasets"),
    ("flow_alt_method", _cfg("flow", "toy.alt_method=heun"), V, "toy.alt_method"),
    ("flow_digits_net", _cfg("flow", "digits.net=resnet"), V, "digits.net"),
    ("flow_theory_s", _cfg("flow", "theory.s=0.0"), V, "theory.s"),
    ("flow_policy_batch", _cfg("flow", "policy.batch_size=0"), V, "policy.batch_size"),
    ("flow_fm_weight", _cfg("flow", "toy.fm_weight=-1.0"), V, "toy.fm_weight"),
    ("scaling_sigma", _cfg("scaling", "sigma=0.0"), V, "sigma"),
    ("scaling_d", _cfg("scaling", "d=0"), V, "config.d "),
    ("scaling_kmin", _cfg("scaling", "exp3_kmin=500"), V, "exp3_kmin"),
    ("scaling_grid", _cfg("scaling", "exp2_t_grid=(200.0,0.5,14)"), V, "exp2_t_grid"),
    ("scaling_chunk", _cfg("scaling", "chunk_size=0"), V, "chunk_size"),
    ("scaling_num_t", _cfg("scaling", "num_t=-5"), V, "num_t"),
    ("repri_lr", _cfg("repri", "learning_rate=0.0"), V, "learning_rate"),
    ("repri_shots", _cfg("repri", "shots=(0,)"), V, "shots"),
    ("repri_folds", _cfg("repri", "folds=(7,)"), V, "folds"),
    ("repri_digits", _cfg("repri", "min_digits=4"), V, "min_digits"),
    ("repri_canvas", _cfg("repri", "canvas=0"), V, "canvas"),
    ("deup_folds", _cfg("deup", "toy.num_folds=1"), V, "num_folds"),
    ("deup_dropout", _cfg("deup", "toy.dropout=1.0"), V, "toy.dropout"),
    ("deup_activation", _cfg("deup", "toy.activation=swish"), V, "toy.activation"),
    ("deup_held_out", _cfg("deup", "digits.held_out=(8,12)"), V, "digits.held_out"),
    ("deup_noise", _cfg("deup", "toy.noise_std=-0.1"), V, "toy.noise_std"),
    ("deup_smo_seeds", _cfg("deup", "smo.seeds=0"), V, "smo.seeds"),
    ("override_unknown", lambda: apply_overrides(load_config("icl:quick"), ["lrr=0.1"]), V,
     "lrr"),
    ("override_type", lambda: apply_overrides(load_config("icl:quick"), ["dim=five"]), V,
     "dim"),
    ("override_bool", lambda: apply_overrides(load_config("icl:quick"), ["cosine=maybe"]), V,
     "cosine"),
    ("override_no_value", lambda: apply_overrides(load_config("icl:quick"), ["lr"]), V, "lr"),
    ("override_int_for_float", lambda: apply_overrides(load_config("icl:quick"),
                                                       ["batch_size=1.5"]), V, "batch_size"),
    ("load_config_missing", lambda: load_config("nonexistent_experiment:quick"), V,
     "nonexistent_experiment"),
    ("load_config_file", lambda: load_config("/tmp/does/not/exist.py"), V, "exist.py"),
    ("load_config_preset", lambda: load_config("icl:huge"), V, "huge"),
    ("load_config_type", lambda: load_config(3), T, "config"),
    ("validate_counts", lambda: validate(load_config("icl:quick"), counts=("dim",),
                                         relations=[(lambda c: False, "dim vs n_head")]), V,
     "dim"),
    ("run_lr_neg", _run("icl", "--config", "icl:quick", "--workdir", "/tmp/_gapjax_bad_in",
                        "--config.lr=-0.01"), V, "config.lr "),
    ("run_small_batch", _run("ghost_bn", "--config", "ghost_bn:quick", "--workdir",
                             "/tmp/_gapjax_bad_in", "--config.small_batch=0"), V,
     "small_batch"),
    ("run_unknown_key", _run("icl", "--config", "icl:quick", "--workdir",
                             "/tmp/_gapjax_bad_in", "--config.nope=1"), V, "nope"),
]


def _cases():
    for group, cases in (("ghost_bn", GHOST_BN), ("flow", FLOW), ("scaling", SCALING),
                         ("icl", ICL), ("repri", REPRI), ("deup", DEUP), ("runner", RUNNER)):
        for name, fn, exc, match in cases:
            yield pytest.param(fn, exc, match, id=f"{group}-{name}")
    for name, fn, exc, match in MORE:
        yield pytest.param(fn, exc, match, id=name)


CASES = list(_cases())


def test_catalogue_size():
    assert len(CASES) >= 200
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("fn, exc, match", CASES)
def test_bad_input(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


def test_config_constraints_name_existing_keys():
    """Every key a CONSTRAINTS rule names exists in every preset (rules and configs in step),
    and every bundled preset passes its own rules."""
    import importlib

    from gapjax.config import _leaf_keys, bundled_configs
    for name in bundled_configs():
        rules = importlib.import_module(f"gapjax.configs.{name}").CONSTRAINTS
        presets = ("quick", "medium", "full") if name == "icl" else ("quick", "full")
        for preset in presets:
            cfg = load_config(f"{name}:{preset}")
            check_config(name, cfg)
            keys = set(_leaf_keys(cfg))
            for kind, listed in rules.items():
                if kind in ("relations", "optional"):
                    continue
                missing = [k for k in listed if k not in keys]
                assert not missing, (name, preset, kind, missing)


# ------------------------------------------- integer inputs and float32 overflow

def test_fit_posterior_integer_X_keeps_sigma():
    """Integer ``X`` is cast to float first: ``sigma = 0.5`` is not truncated to 0."""
    X = np.array([[1, 0], [0, 1], [1, 1], [2, -1]])
    y = np.array([1, 0, 2, 1])
    a = S.fit_posterior(X, y, 0.5, 1.0)
    b = S.fit_posterior(X.astype(np.float32), y.astype(np.float32), 0.5, 1.0)
    assert float(a.sigma) == 0.5
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6)    # same float32 computation


def test_normal_gamma_integer_xs_keeps_mu0():
    """Integer prompts are cast first: ``mu0 = 0.5`` is not truncated to 0."""
    xs = np.array([[[1, 0], [0, 1], [1, 1]]])
    ys = np.array([[1, 0, 2]])
    prior = I.NormalGammaPrior(mu0=0.5)
    a = I.normal_gamma_predictive(xs, ys, prior)["mean"]
    b = I.normal_gamma_predictive(xs.astype(np.float32), ys.astype(np.float32), prior)["mean"]
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert abs(float(a[0, 0]) - 0.5) < 1e-6      # k = 0: the prior mean x^T mu0 = 0.5


@pytest.mark.parametrize("T, dtype", [(1e10, np.float32), (1e30, np.float32),
                                      (1e300, np.float64)])
def test_softmax_error_exact_large_T_limit(T, dtype):
    """Large T: the sampler is uniform, ``delta -> Delta_T^2 + s^2`` (= 1.01 here).
    float32 at T = 1e10 gave 0.185 and T = 1e300 NaN before the stable form."""
    with jax.enable_x64(dtype == np.float64):
        d = S.softmax_error_exact(dtype(0.1), dtype(0.1), dtype(1.0), T, [1, 2, 5, 100])
        # next term of the expansion is O(s^2/T) ~ 1e-10: float32 round-off decides
        np.testing.assert_allclose(np.asarray(d), 1.01, rtol=1e-6)


def test_softmax_error_exact_switch_is_continuous(x64):
    """Just below the switch to the expansion (x = 2(s^2 + D_R^2 + |D_R D_T|)/T =
    eps^(1/3)) the quadrature still runs and agrees with the expansion to 1e-11
    (measured 1e-12 at most), so the switch leaves no visible step."""
    x_switch = np.finfo(np.float64).eps ** (1 / 3)
    for dT, dR, s2 in [(3.0, 3.0, 1.0), (0.1, 0.1, 1.0), (1.0, -2.0, 0.5)]:
        T = 0.99 * 2 * (s2 + dR**2 + abs(dR * dT)) / x_switch
        quad = S.softmax_error_exact(dT, dR, s2, T, [2, 50])
        expn = S.high_temperature_expansion(dT, dR, s2, T, [2, 50])
        np.testing.assert_allclose(np.asarray(quad), np.asarray(expn), rtol=1e-11)


def test_checks_skip_values_under_jit():
    """Value checks need concrete arrays; under jit only shape/dtype checks apply."""
    f = jax.jit(lambda lg, lb: G.cross_entropy(lg, lb))
    assert np.isfinite(float(f(z(2, 3), jnp.array([0, 2]))))
    with pytest.raises(TypeError, match="labels"):
        f(z(2, 3), jnp.array([0.0, 2.0]))
    g = jax.vmap(lambda x: F.sinkhorn_plan(x, x))
    assert g(jax.random.normal(KEY, (2, 4, 2))).shape == (2, 4, 4)
