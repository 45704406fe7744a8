"""Public path of Study 3's rotated-basis optimizer (``RotatedOptimizer``) and its helpers.

The code lives in :mod:`shiftbench.training.rotations`; this module keeps
``shiftbench.rotations.RotatedOptimizer`` working for notebooks and scripts."""

from shiftbench.training.rotations import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_SVD_EVERY,
    FUSED_QKV_MODULES,
    LAYER_TYPES,
    LAYERS,
    SCOPES,
    BlockRotation,
    MatrixLayout,
    RotatedOptimizer,
    haar_rotation,
    layer_type,
    matrix_layout,
    module_layouts,
    parameter_types,
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
