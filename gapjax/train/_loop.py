"""``train_and_evaluate``: the run loop shared by every method.

A :class:`Task` says *what* to train; the config says *how long* and how often
to evaluate, log and checkpoint. The loop:

  * builds the state with :func:`init_train_state` from ``config.seed`` and
    places it replicated on a ``("data",)`` mesh of ``config.num_devices``;
  * draws the batch of step ``s`` as ``task.batch_fn(data_key, s)`` — a pure
    function, so a resumed run sees exactly the batches of a straight run — and
    shards its leading axis over the mesh;
  * writes ``metrics.jsonl`` (one JSON object per logged step, eval rows have
    ``"split": "eval"``), checkpoints under ``workdir/checkpoints`` every
    ``checkpoint_every`` steps keeping ``keep_checkpoints``, and
    ``summary.json`` at the end;
  * with ``config.resume`` restores the newest good checkpoint and truncates
    ``metrics.jsonl`` to the restored step, so the metric stream equals that of
    an uninterrupted run;
  * on SIGTERM finishes the current step, saves a checkpoint, writes the
    summary with ``"preempted": true`` and returns normally (exit code 0).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import signal
import threading
import time
from typing import Any, Callable, Iterable

import jax
import numpy as np
import optax

from gapjax import checkpoint as ckpt
from gapjax import parallel
from gapjax.train._state import TrainState, init_train_state, unalias
from gapjax.train._step import make_eval_step, make_train_step

DEFAULTS = dict(seed=0, num_steps=100, eval_every=0, log_every=10,
                checkpoint_every=0, keep_checkpoints=3, resume=False,
                num_devices=None, num_seeds=None, progress=True)


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


class _Preemption:
    """Sets a flag on SIGTERM while installed (main thread only)."""

    def __init__(self):
        self.flag = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.flag = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _get(config, key):
    if key in config:
        return config[key]
    return DEFAULTS[key]


def _scalars(metrics) -> dict:
    out = {}
    for k, v in jax.device_get(metrics).items():
        v = np.asarray(v)
        out[k] = float(v) if v.size == 1 else v.tolist()
    return out


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
        (0 = only at the end), keep_checkpoints (3), resume (False),
        num_devices (None = all), num_seeds (None; an int S trains S seeds at
        once in one vmapped step: the state and every measurement get a leading
        axis of size S, the batches are shared), progress (True: tqdm on
        process 0).
      workdir: run folder (its parent must exist).
    Returns:
      ``(state, summary)``; ``summary`` is also written to ``summary.json``.
    """
    cfg = {k: _get(config, k) for k in DEFAULTS}
    if int(cfg["num_steps"]) < 0:
        raise ValueError(f"num_steps must be >= 0, got {cfg['num_steps']}")
    for k in ("eval_every", "log_every", "checkpoint_every"):
        if int(cfg[k]) < 0:
            raise ValueError(f"{k} must be >= 0, got {cfg[k]}")
    workdir = check_workdir(workdir)
    ckpt_dir = workdir / "checkpoints"
    mesh = parallel.make_mesh(cfg["num_devices"])
    base = jax.random.key(int(cfg["seed"]))
    init_key, data_key = jax.random.split(base)

    num_seeds = cfg["num_seeds"]
    if num_seeds is None:
        state = init_train_state(init_key, task.init_fn, task.tx)
    else:
        if int(num_seeds) < 1:
            raise ValueError(f"num_seeds must be None or >= 1, got {num_seeds}")
        num_seeds = int(num_seeds)
        state = unalias(jax.vmap(lambda k: init_train_state(k, task.init_fn, task.tx))(
            jax.random.split(init_key, num_seeds)))
    state = parallel.replicate(state, mesh)
    start = 0
    metrics_path = workdir / "metrics.jsonl"
    if cfg["resume"]:
        restored, step = ckpt.restore_latest(ckpt_dir, state)
        if restored is not None:
            state, start = restored, int(step)
            _truncate_metrics(metrics_path, start)
    elif metrics_path.exists():
        metrics_path.unlink()

    step_fn = make_train_step(task.loss_fn, task.tx, mesh=mesh, num_seeds=num_seeds)
    eval_step = (make_eval_step(task.eval_fn, mesh=mesh, num_seeds=num_seeds)
                 if task.eval_fn else None)
    batch_fn = jax.jit(task.batch_fn)
    num_steps = int(cfg["num_steps"])
    is_main = jax.process_index() == 0
    # Faked CPU devices share one thread pool: with several steps in flight their
    # all-reduce rendezvous can starve each other, so keep one step in flight.
    sync_each_step = jax.default_backend() == "cpu" and mesh.size > 1

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

    bar = None
    if cfg["progress"] and is_main and num_steps > start:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, initial=start, desc=workdir.name, leave=False)
    last, last_eval, preempted = _last_train_row(metrics_path), {}, False
    t0, steps_done = time.perf_counter(), 0
    with _Preemption() as pre, open(metrics_path, "a") as log:
        step = start
        while step < num_steps:
            batch = parallel.shard_batch(batch_fn(data_key, step), mesh)
            state, metrics = step_fn(state, batch)
            if sync_each_step:
                jax.block_until_ready(metrics)
            step += 1
            steps_done += 1
            if cfg["log_every"] and (step % cfg["log_every"] == 0 or step == num_steps):
                last = _scalars(metrics)
                if is_main:
                    log.write(json.dumps({"step": step, "split": "train", **last}) + "\n")
                    log.flush()
                if bar is not None:
                    rate = steps_done / (time.perf_counter() - t0)
                    bar.set_postfix(loss=f"{np.mean(last['loss']):.4g}",
                                    steps_s=f"{rate:.1f}")
            if bar is not None:
                bar.update(1)
            if cfg["eval_every"] and step % cfg["eval_every"] == 0 and step < num_steps:
                last_eval = evaluate(state)
                if is_main and last_eval:
                    log.write(json.dumps({"step": step, "split": "eval", **last_eval}) + "\n")
                    log.flush()
            if cfg["checkpoint_every"] and step % cfg["checkpoint_every"] == 0:
                ckpt.save(ckpt_dir, state, step, keep=cfg["keep_checkpoints"])
            if pre.flag:
                preempted = True
                break
        elapsed = time.perf_counter() - t0
        if not preempted:
            last_eval = evaluate(state)
            if is_main and last_eval:
                log.write(json.dumps({"step": step, "split": "eval", **last_eval}) + "\n")
        ckpt.save(ckpt_dir, state, step, keep=cfg["keep_checkpoints"])
    if bar is not None:
        bar.close()
    summary = {"step": int(step), "preempted": preempted, "train": last,
               "eval": last_eval,
               "steps_per_sec": steps_done / elapsed if elapsed > 0 else None,
               "num_devices": int(mesh.shape[parallel.DATA])}
    if is_main:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    return state, summary


def _last_train_row(path: pathlib.Path) -> dict:
    """The newest train measurements already in ``metrics.jsonl`` (for a resumed run)."""
    if not path.exists():
        return {}
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if r.get("split") == "train"]
    return {k: v for k, v in rows[-1].items() if k not in ("step", "split")} if rows else {}


def _truncate_metrics(path: pathlib.Path, step: int) -> None:
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines()
            if ln.strip() and json.loads(ln)["step"] <= step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    tmp.replace(path)
