"""Public path of Study 3's rotated-basis optimizer (``RotatedOptimizer``) and its helpers.

The code lives in :mod:`shiftbench.training.rotations` (the optimizer),
:mod:`shiftbench.training.block_rotation` (its random rotations) and
:mod:`shiftbench.training.parameter_views` (layer types and matrix views); this module keeps
``shiftbench.rotations.RotatedOptimizer`` working for notebooks and scripts."""

from shiftbench.training.block_rotation import BlockRotation, haar_rotation
from shiftbench.training.parameter_views import (
    FUSED_QKV_MODULES,
    LAYER_TYPES,
    LAYERS,
    MatrixLayout,
    layer_type,
    matrix_layout,
    module_layouts,
    parameter_types,
)
from shiftbench.training.rotations import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_SVD_EVERY,
    SCOPES,
    RotatedOptimizer,
)

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_SVD_EVERY",
    "FUSED_QKV_MODULES",
    "LAYERS",
    "LAYER_TYPES",
    "SCOPES",
    "BlockRotation",
    "MatrixLayout",
    "RotatedOptimizer",
    "haar_rotation",
    "layer_type",
    "matrix_layout",
    "module_layouts",
    "parameter_types",
]
