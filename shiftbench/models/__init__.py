"""Models by name: one module per family (``mlp``, ``cnn``, ``nin``, ``gpt``, ``vit``,
``resnet``), each registered in :mod:`shiftbench.models.registry` on import; ``create_model``
builds one (or any timm model).

Importing this package registers every built-in family.
"""

from shiftbench.models import cnn, gpt, mlp, nin, resnet, vit
from shiftbench.models.registry import (
    CPU_VECTORIZED,
    MODELS,
    SIZE_PARAMETERS,
    SIZED_FAMILIES,
    VECTORIZABLE,
    available,
    create_model,
    is_model,
    register,
    vectorizable,
    vectorized_on_cpu,
)

__all__ = [
    "CPU_VECTORIZED",
    "MODELS",
    "SIZED_FAMILIES",
    "SIZE_PARAMETERS",
    "VECTORIZABLE",
    "available",
    "cnn",
    "create_model",
    "gpt",
    "is_model",
    "mlp",
    "nin",
    "register",
    "resnet",
    "vectorizable",
    "vectorized_on_cpu",
    "vit",
]
