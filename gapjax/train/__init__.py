"""Training core: the state pytree, jitted train/eval steps, the run loop.

Public API:
  * :class:`TrainState`, :func:`init_train_state`, :func:`step_key`
  * :func:`train_step_fn` (un-jitted, vmappable), :func:`scan_train_steps`
    (N steps in one ``lax.scan``), :func:`make_train_step`,
    :func:`make_eval_step`, :func:`global_norm`
  * :class:`Task`, :func:`train_and_evaluate` (the periodic-eval / JSONL and
    TensorBoard / checkpoint / SIGTERM-safe loop), :class:`NonFiniteError`,
    :class:`Preempted`, :func:`write_metrics`
"""

from gapjax.train._state import TrainState, init_train_state, step_key
from gapjax.train._loop import (NonFiniteError, Preempted, Task, check_workdir,
                                train_and_evaluate, write_metrics)
from gapjax.train._step import (global_norm, make_eval_step, make_train_step,
                                scan_train_steps, train_step_fn)

__all__ = ["TrainState", "init_train_state", "step_key", "global_norm",
           "make_eval_step", "make_train_step", "scan_train_steps", "train_step_fn", "Task",
           "check_workdir", "train_and_evaluate", "NonFiniteError", "Preempted",
           "write_metrics"]
