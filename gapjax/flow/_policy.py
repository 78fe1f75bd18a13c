"""A 2D multimodal imitation task: reach the goal around an obstacle.

The agent starts near the origin; a disc obstacle sits between it and the goal
above. Demonstrations pass left *or* right of the obstacle (a fair coin per
episode), so the expert's action at the start is bimodal and its mean points
straight into the obstacle. Actions are unit-scale displacement directions
(``state += SPEED * action``); an FM policy generates an action conditioned on the
state (``c = state``).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from gapjax._checks import check_finite, check_int, check_positive, check_shape


@flax.struct.dataclass
class TwoGoalTask:
    """Geometry of the task (all static floats)."""

    obstacle: tuple = flax.struct.field(pytree_node=False, default=(0.0, 1.0))
    radius: float = flax.struct.field(pytree_node=False, default=0.4)
    goal: tuple = flax.struct.field(pytree_node=False, default=(0.0, 2.0))
    goal_radius: float = flax.struct.field(pytree_node=False, default=0.2)
    waypoint_x: float = flax.struct.field(pytree_node=False, default=0.7)
    speed: float = flax.struct.field(pytree_node=False, default=0.15)
    horizon: int = flax.struct.field(pytree_node=False, default=24)
    start_noise: float = flax.struct.field(pytree_node=False, default=0.05)
    action_noise: float = flax.struct.field(pytree_node=False, default=0.05)

    def __post_init__(self):
        for name in ("obstacle", "goal"):
            check_shape(f"TwoGoalTask.{name}", check_finite(f"TwoGoalTask.{name}",
                                                           np.asarray(getattr(self, name))), (2,))
        for name in ("radius", "goal_radius", "waypoint_x", "speed"):
            check_positive(f"TwoGoalTask.{name}", getattr(self, name))
        for name in ("start_noise", "action_noise"):
            check_positive(f"TwoGoalTask.{name}", getattr(self, name), allow_zero=True)
        check_int("TwoGoalTask.horizon", self.horizon, min=1)


def expert_action(task: TwoGoalTask, state, side):
    """Expert direction (unit scale) at ``state`` (2,) for ``side`` in {-1, +1}."""
    wp = jnp.array([side * task.waypoint_x, task.obstacle[1]])
    goal = jnp.asarray(task.goal)
    target = jnp.where(state[1] < task.obstacle[1], wp, goal)
    d = target - state
    return d / jnp.maximum(jnp.linalg.norm(d), 1e-6)


def demonstrations(key: jax.Array, task: TwoGoalTask, num_episodes: int):
    """Expert (state, action) pairs: (num_episodes * horizon, 2) each.

    Each episode picks a side uniformly; actions carry Gaussian noise of std
    ``action_noise``. States after reaching the goal are kept (the expert keeps
    heading to the goal), so every episode contributes ``horizon`` pairs.
    """
    num_episodes = check_int("num_episodes", num_episodes, min=1)
    def episode(k):
        ks, k0, ka = jax.random.split(k, 3)
        side = jnp.where(jax.random.bernoulli(ks), 1.0, -1.0)
        s0 = task.start_noise * jax.random.uniform(k0, (2,), minval=-1.0, maxval=1.0)

        def step(s, kk):
            a = expert_action(task, s, side) + task.action_noise * jax.random.normal(kk, (2,))
            return s + task.speed * a, (s, a)

        _, (ss, aa) = jax.lax.scan(step, s0, jax.random.split(ka, task.horizon))
        return ss, aa

    ss, aa = jax.vmap(episode)(jax.random.split(key, num_episodes))
    return ss.reshape(-1, 2), aa.reshape(-1, 2)


def rollout(key: jax.Array, task: TwoGoalTask, sample_action, num_episodes: int, *,
            push: jax.Array | None = None, push_step: int = 0):
    """Closed-loop rollouts of a stochastic policy; returns success flags (E,) and
    the state paths (E, horizon + 1, 2).

    ``sample_action(key, states (E, 2)) -> actions (E, 2)``. An episode succeeds
    when it enters the goal disc without having entered the obstacle disc;
    actions are clipped to norm 2 (at most two expert steps). ``push`` (E, 2), if
    given, is added to the state of every running episode before step
    ``push_step`` (the same ``key`` without ``push`` gives the unpushed episodes
    with identical noise).
    """
    num_episodes = check_int("num_episodes", num_episodes, min=1)
    if push is not None and jnp.shape(push) != (num_episodes, 2):
        raise ValueError(f"push must have shape ({num_episodes}, 2), got {jnp.shape(push)}")
    if not 0 <= push_step < task.horizon:
        raise ValueError(f"push_step must be in [0, {task.horizon}), got {push_step}")
    k0, kr = jax.random.split(key)
    s0 = task.start_noise * jax.random.uniform(k0, (num_episodes, 2), minval=-1.0, maxval=1.0)
    obst, goal = jnp.asarray(task.obstacle), jnp.asarray(task.goal)

    def step(carry, xs):
        kk, i = xs
        s, crashed, done = carry
        if push is not None:
            s = jnp.where((i == push_step) & ~(crashed | done)[:, None], s + push, s)
        a = sample_action(kk, s)
        n = jnp.linalg.norm(a, axis=-1, keepdims=True)
        a = a * jnp.minimum(1.0, 2.0 / jnp.maximum(n, 1e-6))
        frozen = (crashed | done)[:, None]
        s_new = jnp.where(frozen, s, s + task.speed * a)
        crashed = crashed | (jnp.linalg.norm(s_new - obst[None], axis=-1) < task.radius)
        done = done | (~crashed & (jnp.linalg.norm(s_new - goal[None], axis=-1) < task.goal_radius))
        return (s_new, crashed, done), s_new

    init = (s0, jnp.zeros(num_episodes, bool), jnp.zeros(num_episodes, bool))
    (_, crashed, done), path = jax.lax.scan(step, init, (jax.random.split(kr, task.horizon),
                                                          jnp.arange(task.horizon)))
    path = jnp.concatenate([s0[None], path], 0).transpose(1, 0, 2)
    return done & ~crashed, path
