"""Load the benchmark's plugin folders (solvers/, datasets/, measures/, analysis/) by path.

The plugin folders are not Python packages (a top-level ``datasets`` package
would shadow Hugging Face ``datasets``), so, as Benchopt does, each file is
imported from its path under a private module name. The benchmark root is the
directory holding ``objective.py``: ``$SHIFTBENCH_ROOT`` if set, else the
repository this package lives in.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

KINDS = ("solvers", "datasets", "measures", "analysis")


def benchmark_root() -> Path:
    """The directory holding ``objective.py`` and the plugin folders."""
    root = Path(os.environ.get("SHIFTBENCH_ROOT", Path(__file__).resolve().parents[2]))
    if not (root / "objective.py").is_file():
        raise FileNotFoundError(
            f"no objective.py in {root}: set SHIFTBENCH_ROOT to the shiftbench benchmark folder"
        )
    return root


@cache
def load_module(path: Path) -> ModuleType:
    """Import one plugin file under a stable private name (imported once per process)."""
    name = f"shiftbench_plugins.{path.parent.name}.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def plugin_files(kind: str) -> dict[str, Path]:
    """Plugin files of one kind, by file stem (the plugin's name)."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; one of {', '.join(KINDS)}")
    folder = benchmark_root() / kind
    return {p.stem: p for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")}


def load_all(kind: str) -> dict[str, ModuleType]:
    """Import every plugin file of one kind."""
    return {name: load_module(path) for name, path in plugin_files(kind).items()}


def load(kind: str, name: str) -> ModuleType:
    """Import the plugin file ``<kind>/<name>.py``, with a clear error if there is none."""
    files = plugin_files(kind)
    if name not in files:
        raise KeyError(
            f"unknown {kind[:-1] if kind != 'analysis' else kind} {name!r}; "
            f"known: {', '.join(files) or '(none)'}"
        )
    return load_module(files[name])
