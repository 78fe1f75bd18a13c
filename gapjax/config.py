"""Configs: ``configs/<name>.py`` files with ``get_config(arg=None)`` returning an
``ml_collections.ConfigDict``, and ``key=value`` overrides that fail loudly.

A config is named either by a path (``configs/icl.py:quick``, any file with a
``get_config``) or by the name of a bundled config (``icl:quick``), which is
``gapjax.configs.icl`` — the repository's ``configs/`` folder, installed inside
the package so it works from any directory.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pathlib

import ml_collections


def bundled_configs() -> list[str]:
    """Names of the configs shipped in ``gapjax.configs`` (e.g. ``"icl"``)."""
    import pkgutil

    import gapjax.configs

    return sorted(m.name for m in pkgutil.iter_modules(gapjax.configs.__path__)
                  if not m.name.startswith("_"))


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads ``path/to/file.py[:arg]`` or ``name[:arg]`` and calls ``get_config(arg)``.

    ``name`` is a bundled config (:func:`bundled_configs`); anything with a path
    separator or a ``.py`` suffix is read as a file.
    """
    if not isinstance(spec, (str, pathlib.Path)):
        raise TypeError(f"config spec must be a str or path, got {type(spec).__name__}")
    path, _, arg = str(spec).partition(":")
    p = pathlib.Path(path)
    if p.suffix == ".py" or "/" in path or "\\" in path:
        if not p.is_file():
            raise ValueError(f"config file {p} does not exist")
        mod_spec = importlib.util.spec_from_file_location(f"_gapjax_config_{p.stem}", p)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        names = bundled_configs()
        if path not in names:
            raise ValueError(f"config {path!r} is neither a .py file nor a bundled config; "
                             f"bundled: {', '.join(names)}")
        module = importlib.import_module(f"gapjax.configs.{path}")
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {p} defines no get_config()")
    cfg = module.get_config(arg or None) if arg else module.get_config()
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise TypeError(f"{p}: get_config() must return an ml_collections.ConfigDict, "
                        f"got {type(cfg).__name__}")
    return cfg


def _leaf_keys(cfg, prefix="") -> list[str]:
    keys = []
    for k, v in cfg.items():
        if isinstance(v, ml_collections.ConfigDict):
            keys += _leaf_keys(v, f"{prefix}{k}.")
        else:
            keys.append(f"{prefix}{k}")
    return keys


def _parse(text: str, current):
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"expected a bool (true/false), got {text!r}")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        raise ValueError(f"expected a {type(current).__name__}, got {text!r}") from None
    if current is None:
        return value
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(current)(value)
    if isinstance(value, bool) or not isinstance(value, type(current)):
        raise ValueError(f"expected a {type(current).__name__}, got {text!r}")
    return value


def apply_overrides(cfg: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
    """Applies ``["a.b=value", ...]`` (or a dict) to a copy of ``cfg``.

    Unknown keys and values of the wrong type raise ValueError listing the
    valid keys / the expected type.
    """
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    items = overrides.items() if isinstance(overrides, dict) else (
        o.split("=", 1) if "=" in o else (o, None) for o in overrides)
    valid = _leaf_keys(cfg)
    for key, text in items:
        if text is None:
            raise ValueError(f"override {key!r} must look like key=value")
        if key not in valid:
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(valid)}")
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        current = node[leaf]
        try:
            value = _parse(str(text), current) if not isinstance(text, type(current)) \
                or isinstance(text, str) else text
        except ValueError as e:
            raise ValueError(f"config key {key!r}: {e}") from None
        node[leaf] = value
    return cfg


def _fmt_rule(kind):
    return {"counts": "an integer >= 1", "nonneg_counts": "an integer >= 0",
            "positive": "a finite number > 0", "nonneg": "a finite number >= 0",
            "fractions": "a number in (0, 1)", "rates": "a number in [0, 1)",
            "finite": "a finite number"}[kind]


def _ok(kind, v) -> bool:
    import math
    if kind in ("counts", "nonneg_counts"):
        return (isinstance(v, int) and not isinstance(v, bool)
                and v >= (1 if kind == "counts" else 0))
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return False
    return {"positive": v > 0, "nonneg": v >= 0, "fractions": 0 < v < 1,
            "rates": 0 <= v < 1, "finite": True}[kind]


def validate(config, *, counts=(), nonneg_counts=(), positive=(), nonneg=(),
             fractions=(), rates=(), finite=(), choices=None, optional=(), relations=()):
    """Checks config values before any training; raises ValueError naming the key.

    Each argument lists (dotted) keys: ``counts`` integers >= 1, ``nonneg_counts``
    integers >= 0, ``positive`` finite > 0, ``nonneg`` finite >= 0, ``fractions``
    in (0, 1), ``rates`` in [0, 1), ``finite`` any finite number; a tuple/list
    value must be non-empty and every element must satisfy the rule. ``choices``
    maps keys to allowed values; ``optional`` keys may also be None; ``relations`` is a sequence of
    ``(predicate(config) -> bool, message)`` checked after the per-key rules.
    Keys missing from ``config`` are skipped (a test keeps the rules and the
    bundled configs in step). Returns ``config``.
    """
    def get(key):
        node = config
        for part in key.split("."):
            if part not in node:
                return _MISSING
            node = node[part]
        return node

    rules = dict(counts=counts, nonneg_counts=nonneg_counts, positive=positive,
                 nonneg=nonneg, fractions=fractions, rates=rates, finite=finite)
    for kind, keys in rules.items():
        for key in keys:
            v = get(key)
            if v is _MISSING or (v is None and key in optional):
                continue
            seq = isinstance(v, (list, tuple))
            if (seq and (not v or not all(_ok(kind, e) for e in v))) or (
                    not seq and not _ok(kind, v)):
                what = (f"a non-empty sequence, each element {_fmt_rule(kind)}" if seq
                        else _fmt_rule(kind))
                raise ValueError(f"config.{key} must be {what}"
                                 f"{' (or None)' if key in optional else ''}, got {v!r}")
    for key, allowed in (choices or {}).items():
        v = get(key)
        if v is _MISSING or (v is None and key in optional):
            continue
        for e in (v if isinstance(v, (list, tuple)) else (v,)):
            if e not in tuple(allowed):
                raise ValueError(f"config.{key} must be one of {tuple(allowed)}, "
                                 f"got {v!r}")
    for predicate, message in relations:
        if not predicate(config):
            raise ValueError(f"config: {message}")
    return config


_MISSING = object()


def check_config(experiment: str, config):
    """Validates ``config`` against ``gapjax.configs.<experiment>.CONSTRAINTS``
    (called first thing by every experiment's ``main``)."""
    module = importlib.import_module(f"gapjax.configs.{experiment}")
    return validate(config, **getattr(module, "CONSTRAINTS", {}))
