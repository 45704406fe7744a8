"""Plugins by name: the objective, solvers, datasets and analyses of the benchmark folder."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from shiftbench.plugins import files as plugins


def objective_class() -> type:
    """The benchmark's Benchopt ``Objective`` (``objective.py`` at the benchmark root)."""
    return plugins.load_module(plugins.benchmark_root() / "objective.py").Objective


def solver_class(name: str) -> type:
    """The ``Solver`` class of ``solvers/<name>.py``."""
    return plugins.load("solvers", name).Solver


def dataset_class(name: str) -> type:
    """The ``Dataset`` class of ``datasets/<name>.py``."""
    return plugins.load("datasets", name).Dataset


def analysis(name: str) -> ModuleType:
    """The module ``analysis/<name>.py`` (it defines ``run(context)``)."""
    return plugins.load("analysis", name)


def names(kind: str) -> list[str]:
    """Every plugin name of one kind."""
    return list(plugins.plugin_files(kind))


def check_parameters(cls: type, params: dict[str, Any]) -> None:
    """A plugin's one validation hook, ``check_parameters(params)``, alike for solvers, the
    objective and datasets: raises ``ValueError`` naming the bad value before any trial
    runs; a plugin without the hook accepts any value."""
    hook = getattr(cls, "check_parameters", None)
    if hook is not None:
        hook(params)


def defaults(cls: type) -> dict[str, Any]:
    """A Benchopt class's default parameters: the first value of each list."""
    return {key: values[0] for key, values in cls.parameters.items()}
