"""How a model's parameters are seen: layer types, fused QKV weights and matrix views.

The rotated optimizer's scopes (:mod:`shiftbench.training.rotations`) and Study 3's probes
(``shiftbench.studies.adam_rotations``) read a model through these views.

Each parameter is a vector, a matrix or a table by one rule per shape (``matrix_layout``;
``module_layouts`` for every parameter of a model):

- a vector (a bias, a norm's scale, any tensor of fewer than two dimensions)
  is no matrix (``None``): the rotations leave it in the standard basis;
- a layer's weight (any tensor of two or more dimensions) is the matrix
  (out, rest): a conv kernel (out, in, kh, kw) is (out, in*kh*kw);
- an ``nn.Embedding`` table (vocab, dim) is the linear map from a one-hot
  entry to its vector, so it is transposed to (dim, vocab): its rows are
  output features too, as Zhang, Maes et al. (NeurIPS 2025) App. B.1 does ("we transpose
  embedding layers before and after rotations"). App. C.2 glosses the output-wise rotation
  of an embedding as "within weights corresponding to a same token", which is the
  ``input`` scope under B.1's transposition; we follow B.1's stated procedure;
- a free parameter (one not owned by an ``nn.Linear``, a convolution or an
  embedding, which only the module reveals) first drops its leading
  broadcast dimensions of size 1: timm's ``cls_token`` (1, 1, D) is then a
  vector, and its ``pos_embed`` (1, N, D) a table of N positions, transposed
  like an embedding, so the ``output`` scope mixes one feature across positions and
  ``input`` the features of one position (never the whole table).

A fused QKV weight (and bias) of a module named in ``FUSED_QKV_MODULES`` is its Q, K, V row
blocks, each seen on its own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

FUSED_QKV_MODULES = ("qkv", "c_attn")
LAYER_TYPES = ("embed", "head", "attn", "mlp", "conv", "other")


def layer_type(name: str, param: Tensor) -> str:
    """The layer type of a parameter from its name's tokens (split at ``.`` and ``_``):
    ``embed`` (a token containing "emb", wte, wpe), ``head`` (head, classifier), ``attn``
    (attn, attention, qkv), ``mlp`` (mlp, ffn, fc, fc1, fc2), ``conv`` (a 4-d kernel or a
    token starting with "conv"), else ``other``. The first rule that matches wins."""
    tokens = set(re.split(r"[._]", name.lower()))
    if any("emb" in token for token in tokens) or tokens & {"wte", "wpe"}:
        return "embed"
    if tokens & {"head", "classifier"}:
        return "head"
    if tokens & {"attn", "attention", "qkv"}:
        return "attn"
    if tokens & {"mlp", "ffn", "fc", "fc1", "fc2"}:
        return "mlp"
    if param.ndim == 4 or any(token.startswith("conv") for token in tokens):
        return "conv"
    return "other"


def parameter_types(
    model: nn.Module, classify: Callable[[str, Tensor], str] = layer_type
) -> dict[str, str]:
    """The layer type of each named parameter of ``model``: ``classify(name, param)``, except
    that the classifier a timm model declares through ``get_classifier()`` (such as a
    ResNet's ``fc``) is ``head`` whatever its name."""
    declared = model.get_classifier() if hasattr(model, "get_classifier") else None
    head = {id(p) for p in declared.parameters()} if isinstance(declared, nn.Module) else set()
    return {
        name: "head" if id(p) in head else classify(name, p)
        for name, p in model.named_parameters()
    }


@dataclass(frozen=True)
class MatrixLayout:
    """How a parameter is seen as a matrix: reshaped to ``shape`` (entries, features for a
    table), then transposed when ``table`` so that rows are always output features."""

    shape: tuple[int, int]
    table: bool = False


def matrix_layout(
    shape: Sequence[int], *, embedding: bool = False, free: bool = False
) -> MatrixLayout | None:
    """The matrix view of a tensor of ``shape`` (None: a vector), by the rules of the module
    doc. ``embedding``: an ``nn.Embedding`` table; ``free``: a parameter owned by no linear,
    convolution or embedding layer, whose leading size-1 dimensions are broadcast ones."""
    dims = list(shape)
    if free and len(dims) >= 3:
        while len(dims) > 1 and dims[0] == 1:
            dims.pop(0)
        if len(dims) == 2:
            return MatrixLayout((dims[0], dims[1]), table=True)
    if len(dims) < 2:
        return None
    if embedding:
        return MatrixLayout((math.prod(dims[:-1]), dims[-1]), table=True)
    return MatrixLayout((dims[0], math.prod(dims[1:])))


LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding)


def module_layouts(module: nn.Module) -> dict[str, MatrixLayout | None]:
    """The matrix view of each named parameter of ``module`` (None: a vector), by the rules
    of the module doc: embeddings are tables, free parameters drop broadcast dimensions."""
    owners = {
        id(p): m for m in module.modules() for p in m.parameters(recurse=False) if m is not module
    } | {id(p): module for p in module.parameters(recurse=False)}
    layouts = {}
    for name, p in module.named_parameters():
        owner = owners[id(p)]
        layouts[name] = matrix_layout(
            p.shape,
            embedding=isinstance(owner, nn.Embedding),
            free=not isinstance(owner, LAYERS),
        )
    return layouts
