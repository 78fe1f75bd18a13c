"""``train_and_evaluate``: the run loop shared by every method.

A :class:`Task` says *what* to train; the config says *how long* and how often
to evaluate, log and checkpoint. The loop:

  * checks its config keys before anything else (``TypeError``/``ValueError``
    naming the key);
  * builds the state with :func:`init_train_state` from ``config.seed`` and
    places it replicated on a ``("data",)`` mesh of ``config.num_devices``;
  * draws the batch of step ``s`` as ``task.batch_fn(data_key, s)`` — a pure
    function, so a resumed run sees exactly the batches of a straight run — and
    shards its leading axis over the mesh;
  * writes ``metrics.jsonl`` (one JSON object per logged step, eval rows have
    ``"split": "eval"``) and the same scalars as TensorBoard event files beside
    it (tags ``train/<name>`` and ``eval/<name>``; a measurement with a seed
    axis is written per seed, ``train/loss/seed_0``, ...; further axes are
    indexed the same way, ``eval/mse/3``), checkpoints under
    ``workdir/checkpoints`` every ``checkpoint_every`` steps keeping
    ``keep_checkpoints``, and ``summary.json`` at the end;
  * computes the parameter and update norms (a reduction over every parameter
    each) only on logged steps; every step computes its loss and gradient norm;
  * stops with :class:`NonFiniteError` (naming the step and the measurement) at
    the first step whose loss or gradient norm is not finite, or, on a logged
    step, whose parameter norm is not finite. Parameters that an update with
    finite gradients made non-finite (an overflowing update) are caught by the
    next step's loss or gradient norm, the next logged parameter norm, or the
    check before each save: a non-finite state is never saved, so every kept
    checkpoint is finite;
  * with ``config.resume`` restores the newest good checkpoint (readable and
    finite; newer unusable ones are set aside as ``<step>.unusable-N``) and
    keeps ``metrics.jsonl`` up to the restored step (an unreadable line, such as
    a line torn by a kill, is dropped with a warning naming the file), so the
    metric stream equals that of an uninterrupted run row for row; with no
    usable checkpoint it warns and starts from step 0 with a fresh stream.
    Without ``resume`` an earlier run's metrics are replaced and its checkpoints
    moved aside to ``checkpoints.previous-N`` (never deleted), with a warning;
  * on SIGTERM finishes the current call, saves a checkpoint and raises
    :class:`Preempted` ("preempted at step N, resume with --resume"); a
    preempted run writes no ``summary.json``;
  * with ``config.steps_per_call`` k > 1 runs the steps between two call
    boundaries as one jitted ``lax.scan`` (the batch of each step drawn inside
    it, the state donated). The boundaries are absolute step numbers: every
    logged, evaluated or checkpointed step, ``num_steps`` and every multiple of
    k; a shorter remainder is cut into powers of two, so at most about
    ``2 + log2 k`` lengths are compiled. A resumed run therefore makes the same
    calls as an uninterrupted one. The non-finite check still names the exact
    step inside a call (the scan returns every step's loss and gradient norm),
    and SIGTERM is acted on at the next call boundary (a latency of at most k
    steps). On CPU the result is bitwise that of k = 1 (tested on the digits
    MLP; XLA may fuse differently elsewhere, so treat equality as empirical).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import signal
import threading
import time
import warnings
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gapjax import checkpoint as ckpt
from gapjax import parallel
from gapjax.train._state import TrainState, init_train_state, unalias
from gapjax.train._step import make_eval_step, make_train_step, train_step_fn

DEFAULTS = dict(seed=0, num_steps=100, eval_every=0, log_every=10,
                checkpoint_every=0, keep_checkpoints=3, resume=False,
                num_devices=None, num_seeds=None, progress=True, steps_per_call=1)
# Measurements whose non-finite value stops training (those the step reports).
WATCHED = ("loss", "grad_norm", "param_norm")
METRICS = "metrics.jsonl"


@dataclasses.dataclass(frozen=True)
class Task:
    """What to train.

    Attributes:
      init_fn: ``key -> variables`` (linen variables with ``"params"``).
      loss_fn: ``(params, collections, batch, key) -> (loss, (collections, aux))``.
      tx: optax optimizer.
      batch_fn: ``(data_key, step) -> batch``; a pure (jittable) function whose
        leaves have the global batch on their leading axis.
      eval_fn: optional ``(params, collections, batch) -> dict`` of scalars.
      eval_batches: optional ``() -> iterable of batches`` for evaluation; the
        reported value is the mean over batches.
    """

    init_fn: Callable[[jax.Array], Any]
    loss_fn: Callable
    tx: optax.GradientTransformation
    batch_fn: Callable[[jax.Array, Any], Any]
    eval_fn: Callable[[Any, Any, Any], dict] | None = None
    eval_batches: Callable[[], Iterable[Any]] | None = None


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss, gradient norm, parameter norm or state.

    Attributes: ``step`` (the step as numbered in ``metrics.jsonl``) and
    ``metric`` (the measurement's name).
    """

    def __init__(self, message: str, step: int, metric: str):
        super().__init__(message)
        self.step, self.metric = step, metric


class Preempted(BaseException):
    """The run was stopped by SIGTERM after saving its state.

    A ``BaseException`` like ``KeyboardInterrupt`` (an interruption, not an
    error), so ``except Exception`` blocks do not turn it into a result.
    ``step`` is the newest checkpointed step (``None`` before training started).
    ``python -m gapjax.run`` turns it into exit status 75.
    """

    def __init__(self, step: int | None = None, checkpoint=None):
        self.step = step
        msg = (f"preempted at step {step}, resume with --resume" if step is not None
               else "preempted before training started, resume with --resume")
        super().__init__(msg + (f" (checkpoint {checkpoint})" if checkpoint else ""))


class _Preemption:
    """Sets a flag on SIGTERM while installed (main thread only); the loop acts on
    it at the end of the call (one step, or up to ``steps_per_call`` steps). A
    flag still set when the block ends normally (a SIGTERM after the last check)
    is passed on to the previous handler."""

    def __init__(self):
        self.flag = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.flag = True

    def __exit__(self, exc_type, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
            if self.flag and exc_type is None:
                signal.raise_signal(signal.SIGTERM)


def _get(config, key):
    if key in config:
        return config[key]
    return DEFAULTS[key]


def _check_config(config) -> dict:
    """The loop's keys of ``config`` (defaults filled in), checked."""
    cfg = {k: _get(config, k) for k in DEFAULTS}

    def integer(key, low, optional=False):
        v = cfg[key]
        if v is None and optional:
            return None
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"config.{key} must be an integer"
                            f"{' or None' if optional else ''}, got {v!r}")
        if v < low:
            raise ValueError(f"config.{key} must be >= {low}, got {v}")
        return int(v)

    for key, low in (("seed", 0), ("num_steps", 0), ("eval_every", 0), ("log_every", 0),
                     ("checkpoint_every", 0), ("keep_checkpoints", 1), ("steps_per_call", 1)):
        cfg[key] = integer(key, low)
    for key in ("num_devices", "num_seeds"):
        cfg[key] = integer(key, 1, optional=True)
    for key in ("resume", "progress"):
        if not isinstance(cfg[key], (bool, np.bool_)):
            raise TypeError(f"config.{key} must be True or False, got {cfg[key]!r}")
        cfg[key] = bool(cfg[key])
    return cfg


def _scalars(metrics) -> dict:
    out = {}
    for k, v in jax.device_get(metrics).items():
        v = np.asarray(v)
        out[k] = float(v) if v.size == 1 else v.tolist()
    return out


@jax.jit
def _all_finite(tree) -> jax.Array:
    ok = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
          if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(ok)) if ok else jnp.array(True)


def _nonfinite_reason(state) -> str | None:
    """``None`` if every float in ``state`` is finite, else why not (for restore)."""
    return None if bool(_all_finite(state)) else "it holds non-finite values"


def check_workdir(workdir) -> pathlib.Path:
    """Creates ``workdir``; its parent must exist (clear error otherwise)."""
    workdir = pathlib.Path(workdir).absolute()
    if not workdir.parent.is_dir():
        raise ValueError(f"workdir parent {workdir.parent} does not exist; create it "
                         f"or choose another workdir (got {workdir})")
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"workdir {workdir} exists and is not a directory")
    workdir.mkdir(exist_ok=True)
    return workdir


def train_and_evaluate(task: Task, config, workdir) -> tuple[TrainState, dict]:
    """Trains ``task`` for ``config.num_steps`` steps in ``workdir``.

    Arguments:
      task: a :class:`Task`.
      config: mapping or ConfigDict; keys (defaults): seed (0), num_steps (100),
        eval_every (0 = only at the end), log_every (10), checkpoint_every
        (0 = only at the end), keep_checkpoints (3, >= 1), resume (False),
        num_devices (None = all), num_seeds (None; an int S trains S seeds at
        once in one vmapped step: the state and every measurement get a leading
        axis of size S, the batches are shared), progress (True: tqdm on
        process 0), steps_per_call (1: one jitted call per step; k > 1: up to k
        steps per call in a ``lax.scan``, SIGTERM honoured within k steps; see
        the module docstring). Checked before anything runs. Parameter and
        update norms are computed on logged steps only.
      workdir: run folder (its parent must exist).
    Returns:
      ``(state, summary)``; ``summary`` is also written to ``summary.json``.
    Raises:
      NonFiniteError: a non-finite loss or gradient norm (at that step), or
        parameter norm (checked on logged steps), or state (checked before a
        save); the newest checkpoint, if any, is finite. Preempted: SIGTERM
        (state saved).
    """
    cfg = _check_config(config)
    workdir = check_workdir(workdir)
    ckpt_dir = workdir / "checkpoints"
    if ckpt_dir.exists() and not ckpt_dir.is_dir():
        raise ValueError(f"{ckpt_dir} exists and is not a directory (checkpoints are "
                         "saved there); move it away")
    num_seeds = cfg["num_seeds"]
    is_main = jax.process_index() == 0
    metrics_path = workdir / METRICS
    with _Preemption() as pre:
        mesh = parallel.make_mesh(cfg["num_devices"])
        init_key, data_key = jax.random.split(jax.random.key(cfg["seed"]))
        if num_seeds is None:
            state = init_train_state(init_key, task.init_fn, task.tx)
        else:
            state = unalias(jax.vmap(lambda k: init_train_state(k, task.init_fn, task.tx))(
                jax.random.split(init_key, num_seeds)))
        state = parallel.replicate(state, mesh)
        start, lines, rows = 0, [], []
        if cfg["resume"]:
            restored, step = ckpt.restore_latest(ckpt_dir, state, validate=_nonfinite_reason)
            if restored is None:
                warnings.warn(f"resume: no usable checkpoint in {ckpt_dir}; starting from "
                              f"step 0 with a fresh {METRICS}", RuntimeWarning, stacklevel=2)
                ckpt.set_aside(ckpt_dir)
            else:
                state, start = restored, int(step)
                ckpt.set_aside(ckpt_dir, start)
                if is_main:
                    lines, rows = _read_metrics(metrics_path, start)
        elif is_main and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
            # An earlier run's checkpoints are not this run's, but they may be the
            # only good state of a run the user forgot to --resume: keep them aside.
            i = 0
            while (aside := ckpt_dir.with_name(f"{ckpt_dir.name}.previous-{i}")).exists():
                i += 1
            ckpt_dir.rename(aside)
            warnings.warn(f"workdir {workdir} held checkpoints of an earlier run and "
                          f"resume is off: moved them to {aside}", RuntimeWarning,
                          stacklevel=2)
        if is_main:
            (workdir / "summary.json").unlink(missing_ok=True)
        log = _MetricsLog(workdir, lines, rows, is_main, seed_axis=num_seeds is not None)
        try:
            state, summary = _run(task, cfg, state, start, rows, mesh, data_key, log, pre,
                                  ckpt_dir, workdir)
        finally:
            log.close()
        if is_main:
            (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    return state, summary


def _run(task, cfg, state, start, rows, mesh, data_key, log, pre, ckpt_dir, workdir):
    """The step loop of :func:`train_and_evaluate` (after restore)."""
    num_steps, num_seeds, k = cfg["num_steps"], cfg["num_seeds"], cfg["steps_per_call"]
    # norms=True only where the row is logged; every other step keeps grad_norm
    # (one reduction) so that a non-finite loss or gradient stops at its step.
    step_fns = {norms: make_train_step(task.loss_fn, task.tx, mesh=mesh, num_seeds=num_seeds,
                                       norms=norms) for norms in (True, "grad")}
    chunk_fns = {}  # (length, logged) -> jitted lax.scan over the steps
    eval_step = (make_eval_step(task.eval_fn, mesh=mesh, num_seeds=num_seeds)
                 if task.eval_fn else None)
    batch_fn = jax.jit(task.batch_fn)
    key_data = parallel.replicate(jax.random.key_data(data_key), mesh)
    is_main = jax.process_index() == 0
    # Faked CPU devices share one thread pool: with several steps in flight their
    # all-reduce rendezvous can starve each other, so keep one step in flight.
    sync_each_step = jax.default_backend() == "cpu" and mesh.size > 1
    saved = start or None  # newest checkpoint of this run (restored or written)

    def events(s):
        """(logging, evaluating, saving) after step ``s``."""
        logging = bool(cfg["log_every"]) and (s % cfg["log_every"] == 0 or s == num_steps)
        evaluating = bool(cfg["eval_every"]) and s % cfg["eval_every"] == 0 and s < num_steps
        saving = (bool(cfg["checkpoint_every"]) and s % cfg["checkpoint_every"] == 0
                  and s < num_steps)  # the final save comes after the final eval
        return logging, evaluating, saving

    def call_end(s):
        """The step a call starting after step ``s`` runs to: a function of ``s``
        alone (absolute step numbers), so every run, resumed or not, cuts the
        steps into the same calls. The next event or multiple of ``k``; a shorter
        remainder is cut into powers of two (few distinct compiled lengths). A
        logged call of 2 steps is run as 1 + 1: its scan would have one trip,
        which XLA inlines and fuses across the two steps (not bitwise equal to
        separate steps on CPU)."""
        e = s + 1
        while e < num_steps and e % k and not any(events(e)):
            e += 1
        n = e - s
        end = e if n == k else s + (1 << (n.bit_length() - 1))
        return s + 1 if end - s == 2 and events(end)[0] else end

    def chunk_fn(n, logged):
        """Jitted ``(state, key_data, first) -> (state, stacked, last)``: steps
        ``first .. first+n-1`` (0-based, traced int32) in one call. Not
        ``logged``: all ``n`` in a ``lax.scan`` without the parameter and update
        norms (``stacked``: measurements on a leading axis ``n``; ``last`` None);
        ``logged``: the first ``n - 1`` so, the last with all norms (``last``)."""
        if (n, logged) in chunk_fns:
            return chunk_fns[(n, logged)]
        inner, last = (train_step_fn(task.loss_fn, task.tx, norms=x) for x in ("grad", True))
        if num_seeds is not None:
            inner, last = (jax.vmap(f, in_axes=(0, None)) for f in (inner, last))
        impl = jax.random.key_impl(data_key)

        def run(state, kd, first):
            dkey = jax.random.wrap_key_data(kd, impl=impl)

            def batch(t):
                b = task.batch_fn(dkey, t)
                if mesh is not None:
                    b = jax.lax.with_sharding_constraint(b, parallel.batch_sharding(mesh))
                return b

            state, stacked = jax.lax.scan(lambda st, t: inner(st, batch(t)), state,
                                          first + jnp.arange(n - logged, dtype=jnp.int32))
            if not logged:
                return state, stacked, None
            state, m = last(state, batch(first + n - 1))
            return state, stacked, m

        rep = parallel.replicated(mesh)
        chunk_fns[(n, logged)] = jax.jit(run, donate_argnums=(0,),
                                         in_shardings=(rep, rep, rep), out_shardings=rep)
        return chunk_fns[(n, logged)]

    def evaluate(state):
        if eval_step is None:
            return {}
        batches = task.eval_batches() if task.eval_batches else []
        acc, n = {}, 0
        for b in batches:
            m = _scalars(eval_step(state.params, state.collections,
                                   parallel.shard_batch(b, mesh)))
            for k, v in m.items():
                acc[k] = acc.get(k, 0.0) + np.asarray(v)
            n += 1
        return {k: (v / max(n, 1)).tolist() for k, v in acc.items()}

    def newest():
        return (f"the newest checkpoint, {ckpt_dir / f'{saved:010d}'}, is finite"
                if saved else "no checkpoint of this run was saved")

    def check(first, stacked, metrics):
        """Raises NonFiniteError at the first of steps ``first, first+1, ...``
        (``stacked``: their measurements on a leading axis, or None; ``metrics``:
        the step after them, or None) whose watched measurement is not finite."""
        got = jax.device_get([{k: m[k] for k in WATCHED if k in m} if m is not None else None
                              for m in (stacked, metrics)])
        n = len(got[0]["loss"]) if got[0] is not None else 0
        per_step = [{k: v[i] for k, v in got[0].items()} for i in range(n)]
        per_step += [got[1]] if got[1] is not None else []
        for i, vals in enumerate(per_step):
            step = first + i
            for k in WATCHED:
                v = np.asarray(vals.get(k, 0.0))
                if not np.isfinite(v).all():
                    seeds = (f" (seeds {np.flatnonzero(~np.isfinite(v)).tolist()})"
                             if v.ndim else "")
                    raise NonFiniteError(
                        f"non-finite {k} at step {step}{seeds}: {v.tolist()}; training "
                        f"stopped and nothing after step {step - 1} was saved ({newest()}). "
                        "Lower the learning rate or clip gradients, then start again or "
                        "resume with --resume.", step, k)

    def save(state, step):
        nonlocal saved
        if saved == step:
            return
        if not bool(_all_finite(state)):  # norms can be finite while a buffer is not
            raise NonFiniteError(f"non-finite values in the state at step {step}; not "
                                 f"saved ({newest()})", step, "state")
        try:
            ckpt.save(ckpt_dir, state, step, keep=cfg["keep_checkpoints"])
        except Exception as e:
            raise RuntimeError(
                f"could not save the checkpoint of step {step} in {ckpt_dir} "
                f"({type(e).__name__}: {e}); the earlier checkpoints are kept. Fix the "
                "cause (e.g. free disk space) and resume with --resume") from e
        saved = step

    def preempt(state, step):
        nonlocal pending
        if pending is not None:
            check(*pending)
            pending = None
        if step > 0:
            save(state, step)
        raise Preempted(saved, ckpt_dir / f"{saved:010d}" if saved else None)

    pending = None  # (first step, stacked, metrics) not yet checked for finiteness
    bar = None
    if cfg["progress"] and is_main and num_steps > start:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, initial=start, desc=workdir.name, leave=False)
    last = next((_values(r) for r in reversed(rows) if r.get("split") == "train"), {})
    t0, steps_done, step = time.perf_counter(), 0, start
    try:
        while step < num_steps:
            if pre.flag:
                preempt(state, step)
            end = call_end(step) if k > 1 else step + 1
            logging, evaluating, saving = events(end)
            if end - step == 1:
                batch = parallel.shard_batch(batch_fn(data_key, step), mesh)
                state, metrics = step_fns[True if logging else "grad"](state, batch)
                stacked = None
            else:
                state, stacked, metrics = chunk_fn(end - step, logging)(
                    state, key_data, np.int32(step))
            if sync_each_step:
                jax.block_until_ready((stacked, metrics))
            if pending is not None:  # checked one call late: keeps a call in flight
                check(*pending)
            steps_done += end - step
            if bar is not None:
                bar.update(end - step - 1)
            pending = (step + 1, stacked, metrics)  # steps are numbered from 1 in rows
            step = end
            if logging or evaluating or saving or pre.flag:
                check(*pending)
                pending = None
            if logging:
                last = _scalars(metrics)
                log.write({"step": step, "split": "train", **last})
                if bar is not None:
                    rate = steps_done / (time.perf_counter() - t0)
                    bar.set_postfix(loss=f"{np.mean(last['loss']):.4g}",
                                    steps_s=f"{rate:.1f}")
            if bar is not None:
                bar.update(1)
            if evaluating:
                ev = evaluate(state)
                if ev:
                    log.write({"step": step, "split": "eval", **ev})
            if saving:
                save(state, step)
            if pre.flag:
                preempt(state, step)
        if pending is not None:
            check(*pending)
        elapsed = time.perf_counter() - t0
        if pre.flag:
            preempt(state, step)
        last_eval = evaluate(state)
        # resumed from the final checkpoint: its eval row is normally there already
        if last_eval and not any(r["step"] == step and r.get("split") == "eval"
                                 for r in rows):
            log.write({"step": step, "split": "eval", **last_eval})
        save(state, step)
        if pre.flag:
            preempt(state, step)
    finally:
        if bar is not None:
            bar.close()
    summary = {"step": int(step), "train": last, "eval": last_eval,
               "steps_per_sec": steps_done / elapsed if steps_done and elapsed > 0 else None,
               "num_devices": int(mesh.shape[parallel.DATA])}
    return state, summary


def _values(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("step", "split")}


def _read_metrics(path: pathlib.Path, upto: int) -> tuple[list[str], list[dict]]:
    """The lines and rows of ``path`` with ``step <= upto``.

    A line that is not a JSON row with a step (a line torn by a kill in the
    middle of a write) is dropped with a warning naming the file.
    """
    if not path.exists():
        return [], []
    lines, rows = [], []
    raw = path.read_text(encoding="utf-8", errors="replace").split("\n")
    for i, ln in enumerate(raw, 1):
        if not ln.strip():
            continue
        try:
            row = json.loads(ln)
            step = int(row["step"])
        except (ValueError, KeyError, TypeError):
            torn = "torn last line" if not any(x.strip() for x in raw[i:]) else "bad line"
            warnings.warn(f"{path}: dropping unreadable line {i} ({torn}): {ln[:60]!r}",
                          RuntimeWarning, stacklevel=3)
            continue
        if step <= upto:
            lines.append(ln)
            rows.append(row)
    return lines, rows


def _tb_scalars(tag: str, value, seed_axis: bool):
    """``(tag, float)`` pairs of one measurement (axes indexed in the tag)."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):  # strings, ragged lists: not a scalar series
        return
    if a.ndim == 0:
        yield tag, float(a)
        return
    for idx in np.ndindex(a.shape):
        parts = [f"seed_{idx[0]}" if seed_axis else str(idx[0])] + [str(i) for i in idx[1:]]
        yield f"{tag}/{'/'.join(parts)}", float(a[idx])


def write_metrics(workdir, rows: list[dict], num_seeds: int | None = None) -> None:
    """Writes ``rows`` (dicts with ``step`` and ``split``) as ``metrics.jsonl``
    and TensorBoard event files in ``workdir``, replacing earlier ones (for runs
    that measure without :func:`train_and_evaluate`)."""
    workdir = pathlib.Path(workdir)
    lines = [json.dumps(r) for r in rows]
    _MetricsLog(workdir, lines, [json.loads(ln) for ln in lines], True,
                seed_axis=num_seeds is not None).close()


class _MetricsLog:
    """``metrics.jsonl`` and TensorBoard event files beside it (process 0 writes).

    Starts from ``lines`` (the rows kept on resume): the JSONL file is rewritten
    with them and the event files are rebuilt from them, so both always hold
    exactly the rows of the run, whatever the kill point.
    """

    def __init__(self, workdir: pathlib.Path, lines, rows, enabled: bool, seed_axis: bool):
        self.enabled, self.seed_axis = enabled, seed_axis
        self.file = self.tb = None
        if not enabled:
            return
        path = workdir / METRICS
        tmp = path.with_name(METRICS + ".tmp")
        tmp.write_text("".join(ln + "\n" for ln in lines))
        tmp.replace(path)
        for f in workdir.glob("events.out.tfevents.*"):
            f.unlink()
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(workdir), flush_secs=10)
        for r in rows:
            self._to_tb(r)
        self.file = open(path, "a")

    def _to_tb(self, row: dict) -> None:
        split = row.get("split", "train")
        for k, v in _values(row).items():
            for tag, x in _tb_scalars(f"{split}/{k}", v, self.seed_axis):
                self.tb.add_scalar(tag, x, int(row["step"]))

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        self._to_tb(row)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
