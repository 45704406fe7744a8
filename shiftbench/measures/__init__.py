"""The measure registry: ``@measure`` registers a generalization measure by name, ``compute``
evaluates them on a trained model. The measures themselves are plugins in ``measures/``;
:mod:`shiftbench.measures.utils` holds the helpers they share (layers, norms, bisection)."""

from shiftbench.measures.core import (
    REGISTRY,
    Measure,
    MeasureConfig,
    MeasureContext,
    available,
    compute,
    compute_with_reasons,
    eval_mode,
    families,
    measure,
    registry,
    size_adjusted,
)

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
