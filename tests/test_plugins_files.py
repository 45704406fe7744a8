"""Plugin loading by path: names are file stems, an unknown name lists the known ones, and a
plugin file is executed once per process (the same module object every time)."""

import sys
from pathlib import Path

import pytest

from shiftbench.plugins import files as plugins
from shiftbench.plugins import registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(tmp_path, monkeypatch):
    """A throwaway benchmark folder with one solver that counts its own imports."""
    (tmp_path / "objective.py").write_text("class Objective:\n    parameters = {}\n")
    solvers = tmp_path / "solvers"
    solvers.mkdir()
    counter = tmp_path / "imports.txt"
    (solvers / "counted.py").write_text(
        f"with open({str(counter)!r}, 'a') as f:\n    f.write('x')\n"
        "class Solver:\n    name = 'counted'\n    parameters = {'lr': [0.1]}\n"
    )
    (solvers / "_helper.py").write_text("")
    (solvers / "notes.txt").write_text("not a plugin")
    for kind in ("datasets", "measures", "analysis"):
        (tmp_path / kind).mkdir()
    monkeypatch.setenv("SHIFTBENCH_ROOT", str(tmp_path))
    return tmp_path, counter


def test_a_plugin_file_is_loaded_once(bench):
    _, counter = bench
    first = plugins.load("solvers", "counted")
    second = plugins.load("solvers", "counted")
    assert first is second
    assert counter.read_text() == "x"
    assert sys.modules["shiftbench_plugins.solvers.counted"] is first
    assert registry.solver_class("counted") is first.Solver
    assert plugins.load_all("solvers") == {"counted": first}
    assert counter.read_text() == "x"


def test_plugin_files_are_py_files_not_starting_with_underscore(bench):
    root, _ = bench
    assert plugins.plugin_files("solvers") == {"counted": root / "solvers" / "counted.py"}
    assert plugins.plugin_files("datasets") == {}
    assert registry.names("solvers") == ["counted"]


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError) as info:
        plugins.load("solvers", "adagrad")
    message = str(info.value)
    assert "unknown solver 'adagrad'" in message
    for name in ("adam", "adamw", "momentum", "nesterov", "rmsprop", "sgd"):
        assert name in message
    with pytest.raises(KeyError, match=r"colored_digits.*rotated_digits"):
        registry.dataset_class("mnistt")
    with pytest.raises(KeyError, match=r"unknown analysis 'nope'.*id_ood_table"):
        registry.analysis("nope")


def test_unknown_name_in_an_empty_folder(bench):
    with pytest.raises(KeyError, match=r"\(none\)"):
        plugins.load("datasets", "anything")


def test_unknown_kind():
    with pytest.raises(ValueError, match="solvers, datasets, measures, analysis"):
        plugins.plugin_files("optimizers")


def test_benchmark_root(monkeypatch, tmp_path):
    monkeypatch.delenv("SHIFTBENCH_ROOT", raising=False)
    assert plugins.benchmark_root() == ROOT
    monkeypatch.setenv("SHIFTBENCH_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="SHIFTBENCH_ROOT"):
        plugins.benchmark_root()


@pytest.mark.parametrize("kind", ["solvers", "datasets"])
def test_every_plugin_name_is_its_file_stem(kind):
    lookup = registry.solver_class if kind == "solvers" else registry.dataset_class
    names = registry.names(kind)
    assert names == sorted(p.stem for p in (ROOT / kind).glob("*.py"))
    for name in names:
        assert lookup(name).name == name


def test_analyses_define_run_and_a_docstring():
    names = registry.names("analysis")
    assert {"id_ood_table", "id_ood_scatter"} <= set(names)
    for name in names:
        module = registry.analysis(name)
        assert callable(module.run) and module.__doc__.strip()


def test_defaults_are_the_first_values():
    cls = registry.solver_class("adam")
    defaults = registry.defaults(cls)
    assert defaults == {k: v[0] for k, v in cls.parameters.items()}
    assert defaults["lr"] == 1e-3 and defaults["beta1"] == 0.9
