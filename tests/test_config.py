"""Configs, overrides and the runner's argument checks."""

import ml_collections
import pytest

from gapjax.config import apply_overrides, load_config
from gapjax.run import main as run_main


def _cfg():
    c = ml_collections.ConfigDict()
    c.lr = 0.1
    c.steps = 10
    c.name = "a"
    c.flag = False
    c.widths = (8, 8)
    c.opt = ml_collections.ConfigDict({"momentum": 0.9})
    return c


def test_overrides_parse_with_the_field_type():
    c = apply_overrides(_cfg(), ["lr=1", "steps=20", "name=b", "flag=true",
                                 "widths=(4, 4, 4)", "opt.momentum=0.5"])
    assert c.lr == 1.0 and isinstance(c.lr, float)
    assert c.steps == 20 and c.name == "b" and c.flag is True
    assert c.widths == (4, 4, 4) and c.opt.momentum == 0.5
    assert _cfg().steps == 10  # the input is not mutated


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown config key .lrr.; valid keys: flag, lr, name, opt.momentum, steps, widths"):
        apply_overrides(_cfg(), ["lrr=1"])


@pytest.mark.parametrize("kv", ["steps=1.5", "steps=abc", "flag=maybe", "lr=[1]"])
def test_wrong_type_is_rejected(kv):
    with pytest.raises(ValueError, match="expected a"):
        apply_overrides(_cfg(), [kv])


def test_load_config_and_missing_file(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("import ml_collections\n"
                 "def get_config(arg=None):\n"
                 "    c = ml_collections.ConfigDict(); c.arg = str(arg); return c\n")
    assert load_config(f"{f}:full").arg == "full"
    assert load_config(str(f)).arg == "None"
    with pytest.raises(ValueError, match="does not exist"):
        load_config(str(tmp_path / "nope.py"))


def test_runner_rejects_unknown_key_and_missing_parent(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("import ml_collections\n"
                 "def get_config(arg=None):\n"
                 "    return ml_collections.ConfigDict({'seed': 0})\n")
    with pytest.raises(ValueError, match="valid keys: seed"):
        run_main(["ghost_bn", "--config", str(f), "--workdir", str(tmp_path / "w"),
                  "--config.sed=1"])
    with pytest.raises(ValueError, match="workdir parent"):
        run_main(["ghost_bn", "--config", str(f), "--workdir", str(tmp_path / "x" / "y")])
    with pytest.raises(SystemExit):
        run_main(["nomethod", "--config", str(f), "--workdir", str(tmp_path / "w")])


def test_runner_end_to_end_writes_the_run_files(tmp_path):
    """`python -m gapjax.run scaling` on a small config: config.json, summary.json,
    metrics.jsonl (final scalars for a closed-form experiment) and figures."""
    import json
    import pathlib

    cfg = pathlib.Path(__file__).parents[1] / "configs" / "scaling.py"
    wd = tmp_path / "run"
    assert run_main(["scaling", "--config", f"{cfg}:quick", "--workdir", str(wd)]) == 0
    for f in ("config.json", "summary.json", "metrics.jsonl"):
        assert (wd / f).is_file(), f
    assert json.loads((wd / "config.json").read_text())
    row = json.loads((wd / "metrics.jsonl").read_text().splitlines()[0])
    assert row["split"] == "final" and len(row) > 2
    assert list((wd / "figures").glob("*.png"))


def test_a_bundled_config_loads_by_name_as_by_path():
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "configs" / "icl.py"
    assert load_config("icl:quick").to_dict() == load_config(f"{path}:quick").to_dict()
    assert load_config("scaling").to_dict() == load_config(str(path.with_name("scaling.py"))).to_dict()
    with pytest.raises(ValueError, match="bundled: .*icl"):
        load_config("nosuchmethod:quick")
    with pytest.raises(TypeError, match="config spec"):
        load_config(3)


def test_installed_gapjax_adds_no_top_level_experiments_or_configs(tmp_path):
    """From an unrelated folder, importing every entry point and experiment leaves
    no top-level ``experiments``/``configs`` module, and neither name resolves."""
    import subprocess
    import sys

    code = (
        "import importlib, importlib.util, pkgutil, sys\n"
        "import gapjax.reproduce, gapjax.run, gapjax.experiments, gapjax.configs\n"
        "for pkg in (gapjax.experiments, gapjax.configs):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(pkg.__name__ + '.' + m.name)\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('experiments', 'configs')]\n"
        "assert not bad, bad\n"
        "assert importlib.util.find_spec('experiments') is None\n"
        "assert importlib.util.find_spec('configs') is None\n"
        "print('ok', len(list(pkgutil.iter_modules(gapjax.experiments.__path__))))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok", "6"]


def test_pyproject_lists_every_gapjax_subpackage():
    """The explicit package list (needed for the experiments/configs mapping) must
    name every subpackage on disk, or an installed wheel would silently lack it."""
    import pathlib
    import tomllib

    root = pathlib.Path(__file__).parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    on_disk = {".".join(p.parent.relative_to(root).parts)
               for p in (root / "gapjax").rglob("__init__.py")}
    on_disk |= {"gapjax.experiments", "gapjax.configs"}
    assert on_disk == listed
