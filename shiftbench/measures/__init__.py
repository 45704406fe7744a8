"""The measure registry: ``@measure`` registers a generalization measure by name, ``compute``
evaluates them on a trained model. The measures themselves are plugins in ``measures/``;
:mod:`shiftbench.measures.utils` holds the helpers they share (layers, norms, bisection) and
:mod:`shiftbench.measures.config` their settings.

The names below load :mod:`shiftbench.measures.core` (and torch) on first use, so the
torch-free ``config`` module imports alone (PEP 562)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "REGISTRY",
    "Measure",
    "MeasureConfig",
    "MeasureContext",
    "available",
    "compute",
    "compute_with_reasons",
    "eval_mode",
    "families",
    "measure",
    "registry",
    "size_adjusted",
]


def __getattr__(name: str) -> Any:
    if name == "MeasureConfig":
        return import_module("shiftbench.measures.config").MeasureConfig
    if name in __all__:
        return getattr(import_module("shiftbench.measures.core"), name)
    raise AttributeError(f"module 'shiftbench.measures' has no attribute {name!r}")
