"""An in-context UQ transformer against Bayes on a prior *you* define.

Define a Normal-Gamma prior over linear-regression tasks, train a small
:class:`gapjax.icl.ICLTransformer` with the Gaussian NLL on fresh prompts from
it (N steps in one ``lax.scan``), then compare it per context length with the
exact Bayes predictive (:func:`gapjax.icl.normal_gamma_predictive`) and
prior-free ridge: MSE, NLL, 90% coverage and ``sigma_hat / sigma_Bayes``.

    python examples/icl_vs_bayes_your_prior.py --steps 1500
"""

import argparse

import jax
import jax.numpy as jnp
import optax

from gapjax import icl, train

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--steps", type=int, default=1500)
ap.add_argument("--dim", type=int, default=2)
ap.add_argument("--length", type=int, default=12, help="pairs per prompt T")
ap.add_argument("--eval_tasks", type=int, default=2000)
ap.add_argument("--max_mse_ratio", type=float, default=1.25, help="asserted model/Bayes MSE")
args = ap.parse_args()

# Your prior: noise sigma ~ 0.5 (tau ~ Gamma(10, 2.5)), weights around 0.5.
prior = icl.NormalGammaPrior(a0=10.0, b0=2.5, mu0=0.5)
model = icl.ICLTransformer(n_dims=args.dim, n_positions=args.length, n_layer=2, n_head=4,
                           n_embd=64, token_format="paired")
schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, args.steps // 5, args.steps,
                                              end_value=1.5e-4)
tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.0))
batch_fn = icl.make_batch_fn(64, args.length, args.dim, prior)
k_init, k_data, k_eval = jax.random.split(jax.random.key(0), 3)
xs0 = jnp.zeros((1, args.length, args.dim))
state = jax.jit(lambda k: train.init_train_state(
    k, lambda kk: model.init(kk, xs0, xs0[..., 0]), tx))(k_init)
state, metrics = jax.jit(lambda s: train.scan_train_steps(
    icl.make_loss_fn(model), tx, s, lambda t: batch_fn(k_data, t), args.steps))(state)
print(f"trained {args.steps} steps, final NLL {float(metrics['loss'][-50:].mean()):.3f}")



@jax.jit
def evaluate(params, key):
    """Model, Bayes and ridge metrics per context length on fresh prompts (one jit)."""
    ev = icl.sample_batch(key, args.eval_tasks, args.length, args.dim, prior)
    mu, var = icl.predict(model, params, ev["xs"], ev["ys"])
    bayes = icl.normal_gamma_predictive(ev["xs"], ev["ys"], prior)
    ridge = icl.ridge_predictive(ev["xs"], ev["ys"])
    return (icl.uq_metrics(mu, var, ev["ys"], sigma_ref=jnp.sqrt(bayes["var"])),
            icl.uq_metrics(bayes["mean"], bayes["scale2"], ev["ys"], dof=bayes["dof"]),
            icl.uq_metrics(ridge["mean"], ridge["var"], ev["ys"]))


m_model, m_bayes, m_ridge = evaluate(state.params, k_eval)

print(" k | MSE model / Bayes / ridge | NLL model / Bayes | cover90 model | sigma/sigma_B")
for k in range(args.length):
    print(f"{k:2d} | {m_model['mse'][k]:.3f} / {m_bayes['mse'][k]:.3f} / "
          f"{m_ridge['mse'][k]:7.3f}  | {m_model['nll'][k]:6.3f} / {m_bayes['nll'][k]:6.3f}"
          f" |     {m_model['coverage'][k]:.3f}     | {m_model['sigma_ratio'][k]:.3f}")
avg = {n: icl.position_average(m) for n, m in (("model", m_model), ("bayes", m_bayes))}
ratio = avg["model"]["mse"] / avg["bayes"]["mse"]
gap = avg["model"]["nll"] - avg["bayes"]["nll"]
print(f"position-averaged model/Bayes MSE {ratio:.3f}, NLL gap {gap:.3f} nats")
assert ratio < args.max_mse_ratio, ratio
