"""Checkpoints: one thin module over orbax.

Layout: ``<directory>/<step:010d>/`` holds an orbax ``StandardCheckpointer``
save of the whole pytree (the train state carries its own step and RNG key
data) plus ``gapjax_manifest.json`` with the SHA-256 of every file, written
last. A step folder without a valid manifest is incomplete or corrupt.

Guarantees:
  * nothing is overwritten in place: an existing valid step is left alone, an
    invalid one is moved aside (``<step>.corrupt-N``) before a fresh save;
    orbax itself writes to a temporary folder and renames it when complete;
  * old checkpoints are pruned only after the new one is verified, so the last
    good checkpoint always survives;
  * :func:`restore` raises :class:`CheckpointError` naming the path when a
    checkpoint is truncated, corrupt or unreadable (permissions, I/O errors),
    and :func:`restore_latest` falls back to the newest good one;
  * :func:`set_aside` moves step folders that must not be restored (newer than
    the step a run resumed from) out of the way instead of deleting them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import warnings
from typing import Any

import jax

MANIFEST = "gapjax_manifest.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or corrupt (message names the path)."""


def _step_dir(directory, step: int) -> pathlib.Path:
    return pathlib.Path(directory) / f"{int(step):010d}"


def _digest(root: pathlib.Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            out[str(p.relative_to(root))] = h.hexdigest()
    return out


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def all_steps(directory) -> list[int]:
    """Steps with a step folder in ``directory`` (valid or not), ascending."""
    d = pathlib.Path(directory)
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())


def verify(path) -> None:
    """Raises :class:`CheckpointError` unless ``path`` is a complete, readable checkpoint."""
    path = pathlib.Path(path)
    try:
        _verify(path)
    except OSError as e:  # PermissionError, I/O errors: as bad as a corrupt file
        raise CheckpointError(f"checkpoint {path} is unreadable: {type(e).__name__}: "
                              f"{e}") from e


def _verify(path: pathlib.Path) -> None:
    man = path / MANIFEST
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not man.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: no {MANIFEST} "
                              "(the save was interrupted)")
    try:
        expected = json.loads(man.read_text())["files"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} has an unreadable manifest: {e}") from e
    actual = _digest(path)
    if actual != expected:
        bad = sorted(set(expected) ^ set(actual)) + sorted(
            k for k in expected if k in actual and expected[k] != actual[k])
        raise CheckpointError(f"checkpoint {path} is corrupt: files differ from the "
                              f"manifest: {bad[:5]}")


def save(directory, state: Any, step: int | None = None, *, keep: int | None = None
         ) -> pathlib.Path:
    """Saves ``state`` as step ``step`` (default ``int(state.step)``).

    Arguments:
      directory: folder of step sub-folders (created if needed; its parent must exist).
      state: any pytree of arrays.
      step: the step number; defaults to ``state.step``.
      keep: if given, keep only the newest ``keep`` valid checkpoints afterwards.
    Returns:
      the step folder.
    """
    directory = pathlib.Path(directory).absolute()
    if step is None:
        step = int(jax.device_get(state.step))
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    directory.mkdir(parents=True, exist_ok=True)
    path = _step_dir(directory, step)
    if path.exists():
        try:
            verify(path)
            return path  # never overwrite a good checkpoint
        except CheckpointError:
            if jax.process_index() == 0:
                i = 0
                while (aside := path.with_name(f"{path.name}.corrupt-{i}")).exists():
                    i += 1
                path.rename(aside)
    ckptr = _checkpointer()
    ckptr.save(path, state)
    ckptr.wait_until_finished()
    if jax.process_index() == 0:
        tmp = path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps({"step": int(step), "files": _digest(path)}))
        os.replace(tmp, path / MANIFEST)
    _sync("gapjax_checkpoint_save")
    if keep is not None and jax.process_index() == 0:
        prune(directory, keep)
    return path


def prune(directory, keep: int) -> None:
    """Deletes all but the newest ``keep`` valid checkpoints (never the newest valid)."""
    valid = []
    for s in reversed(all_steps(directory)):
        try:
            verify(_step_dir(directory, s))
            valid.append(s)
        except CheckpointError:
            pass
    for s in valid[keep:]:
        shutil.rmtree(_step_dir(directory, s), ignore_errors=True)


def restore(path, like: Any) -> Any:
    """Restores the checkpoint at ``path`` into the structure/shardings of ``like``.

    Raises :class:`CheckpointError` (naming ``path``) if it is incomplete or
    corrupt, or if its structure does not match ``like``.
    """
    path = pathlib.Path(path).absolute()
    verify(path)
    abstract = jax.tree.map(_abstract, like)
    try:
        return _checkpointer().restore(path, abstract)
    except Exception as e:  # orbax raises many types for mismatches
        raise CheckpointError(f"checkpoint {path} could not be restored into the "
                              f"given structure: {type(e).__name__}: {e}") from e


def restore_latest(directory, like: Any, validate=None):
    """Restores the newest good checkpoint of ``directory``.

    Corrupt, incomplete or unreadable newer checkpoints are skipped with a
    warning that names them, as are those for which ``validate(state)`` returns
    a reason string (e.g. "holds non-finite values"). Returns ``(state, step)``,
    or ``(None, None)`` if there is none.
    """
    for s in reversed(all_steps(directory)):
        path = _step_dir(directory, s)
        try:
            state = restore(path, like)
        except (CheckpointError, OSError) as e:
            warnings.warn(f"skipping checkpoint: {e}", RuntimeWarning, stacklevel=2)
            continue
        why = validate(state) if validate is not None else None
        if why:
            warnings.warn(f"skipping checkpoint {path}: {why}", RuntimeWarning, stacklevel=2)
            continue
        return state, s
    return None, None


def set_aside(directory, after: int = -1) -> list[pathlib.Path]:
    """Renames every step folder newer than ``after`` to ``<step>.unusable-N``.

    A resumed run calls this with the step it restored, so that later saves
    are neither blocked by (:func:`save` never overwrites a valid checkpoint)
    nor pruned in favour of the checkpoints it could not use. Process 0 only;
    returns the new paths.
    """
    moved = []
    if jax.process_index() == 0:
        for s in all_steps(directory):
            if s > after:
                path = _step_dir(directory, s)
                i = 0
                while (aside := path.with_name(f"{path.name}.unusable-{i}")).exists():
                    i += 1
                path.rename(aside)
                moved.append(aside)
    _sync("gapjax_checkpoint_set_aside")
    return moved


def _abstract(x):
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
