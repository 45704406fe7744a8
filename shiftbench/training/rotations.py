"""Run any torch optimizer in a rotated basis: every solver's ``rotation`` hyperparameter.

The training loop's, offered to every solver; Study 3 ("Adam under rotations",
``shiftbench.studies.adam_rotations``) is the study that varies it.

Zhang, Maes et al. (NeurIPS 2025) train with an optimizer whose coordinates are
a rotation of the standard ones. ``RotatedOptimizer`` does this without
touching the model: the weights stay in the standard basis, and each step

1. rotates the weights and the gradient into *shadow* tensors,
2. lets the base optimizer (whose state lives on the shadows) take its step,
3. rotates the shadow's change back and adds it to the weights,
4. applies weight decay in the standard basis, decoupled as in AdamW.

SGD (with or without momentum) is rotation-equivariant, so it follows the
unrotated trajectory; Adam's elementwise division is not, which is what the
study measures.

Scopes (what a rotation mixes, Zhang, Maes et al. Sec. 3.1 and Fig. 4; rotations never cross
parameter groups, whose hyperparameters may differ):

- ``none``: the identity; the base optimizer runs as usual.
- ``global``: the whole flattened parameter vector of each group.
- ``layer``: the parameters of one layer together (same module name, e.g. a
  Linear's weight and bias); a fused QKV projection is three layers Q, K, V (Sec. 3.1:
  "keys/queries/values are treated separately"; App. B.1).
  Without names every tensor is its own layer.
- ``output``: each weight matrix W (out, in) is rotated on the right, W R^T,
  so the weights ending at one output neuron (a row) are mixed; one rotation
  per matrix, shared by its rows.
- ``input``: each weight matrix is rotated on the left, R W (its columns).
- ``svd``: each weight matrix's gradient G = U S V^T defines the basis; the
  base optimizer sees U^T G V and its step is mapped back with U (.) V^T.
  U and V (full, square: out^2 + in^2 memory per matrix, so meant for small
  vocabularies) are recomputed from the current gradient every ``svd_every``
  steps (Sec. 3.2 and App. B.1: 250; App. D, Algorithm 5, whose ``t mod 250 = 0``
  leaves the first basis undefined: ours is computed at the first step); the base
  optimizer's moments are not transformed then (Algorithm 5 keeps m and v).

The ``output``, ``input`` and ``svd`` scopes rotate each parameter as the matrix that
:mod:`shiftbench.training.parameter_views` makes of it (one rule per shape,
``matrix_layout``; a vector stays in the standard basis). In every scope a fused QKV weight
(and bias) is split into its Q, K, V row blocks, each rotated on its own.

Large dimensions use a ``BlockRotation`` (:mod:`shiftbench.training.block_rotation`: a
random permutation then Haar blocks of size ``block_size``). All rotations are drawn at
construction from a private ``torch.Generator`` seeded with ``seed``.

Parameters may be given as torch optimizers accept them: tensors, (name,
tensor) pairs as ``model.named_parameters()`` yields, or param-group dicts of
either. Names decide the layers and fused QKV weights; ``module=model`` names
plain tensors and recognises ``nn.Embedding`` tables, which is only possible
with the module.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from shiftbench.training.block_rotation import BlockRotation
from shiftbench.training.parameter_views import (
    FUSED_QKV_MODULES,
    LAYER_TYPES,
    MatrixLayout,
    layer_type,
    matrix_layout,
    module_layouts,
    parameter_types,
)

SCOPES = ("none", "global", "layer", "output", "input", "svd")
# Zhang, Maes et al. (NeurIPS 2025): Haar blocks of 768, GPT-2's width (App. B.1), SVD bases
# recomputed every 250 steps (Sec. 3.2, App. B.1, App. D Algorithm 5).
DEFAULT_BLOCK_SIZE = 768
DEFAULT_SVD_EVERY = 250


@dataclass(frozen=True, eq=False)
class _Piece:
    """A parameter, or a block of its rows (one of Q, K, V of a fused weight), with its
    matrix view (None: a vector)."""

    param: Tensor
    rows: slice | None = None
    layout: MatrixLayout | None = None

    def view(self, full: Tensor) -> Tensor:
        """The piece's part of a tensor shaped like the parameter (a view: writes go through)."""
        return full if self.rows is None else full[self.rows]

    def matrix(self, value: Tensor) -> Tensor:
        """A piece-shaped value as a matrix (out, rest), transposed for tables."""
        assert self.layout is not None
        matrix = value.reshape(self.layout.shape)
        return matrix.mT if self.layout.table else matrix

    def from_matrix(self, matrix: Tensor) -> Tensor:
        """Inverse of ``matrix``: back to the piece's shape."""
        assert self.layout is not None
        shape = self.view(self.param).shape
        return (matrix.mT if self.layout.table else matrix).reshape(shape)


class _Unit:
    """Some pieces, the shadow tensor the base optimizer sees for them, and the rotation."""

    def __init__(self, pieces: Sequence[_Piece], shadow_shape: Sequence[int]) -> None:
        self.pieces = tuple(pieces)
        first = pieces[0].param
        dtype = first.dtype
        for piece in pieces[1:]:
            dtype = torch.promote_types(dtype, piece.param.dtype)
        self.shadow = torch.zeros(tuple(shadow_shape), dtype=dtype, device=first.device)

    def rotate(self, values: Sequence[Tensor]) -> Tensor:
        """Standard-basis values of the pieces (each in its piece's shape) -> shadow-shaped."""
        raise NotImplementedError

    def unrotate(self, rotated: Tensor) -> list[Tensor]:
        """Shadow-shaped -> standard-basis values, one per piece in its shape."""
        raise NotImplementedError

    def refresh(self, grads: Sequence[Tensor]) -> None:
        """Recompute a gradient-dependent basis (only the SVD scope has one)."""


class _Identity(_Unit):
    """One whole parameter, not rotated; the shadow has the parameter's shape."""

    def __init__(self, piece: _Piece) -> None:
        super().__init__([piece], piece.view(piece.param).shape)

    def rotate(self, values: Sequence[Tensor]) -> Tensor:
        return values[0].to(self.shadow.dtype, copy=True)

    def unrotate(self, rotated: Tensor) -> list[Tensor]:
        return [rotated]


class _Flat(_Unit):
    """Pieces flattened and concatenated into one vector, rotated as a whole."""

    def __init__(self, pieces: Sequence[_Piece], generator: torch.Generator, block_size: int):
        self.shapes = [piece.view(piece.param).shape for piece in pieces]
        self.sizes = [shape.numel() for shape in self.shapes]
        super().__init__(pieces, (sum(self.sizes),))
        self.rotation = BlockRotation.haar(
            sum(self.sizes), block_size, generator, self.shadow.dtype, self.shadow.device
        )

    def rotate(self, values: Sequence[Tensor]) -> Tensor:
        flat = torch.cat([value.reshape(-1).to(self.shadow.dtype) for value in values])
        return self.rotation.apply(flat)

    def unrotate(self, rotated: Tensor) -> list[Tensor]:
        parts = self.rotation.apply_transpose(rotated).split(self.sizes)
        return [part.reshape(shape) for part, shape in zip(parts, self.shapes)]


class _Matrix(_Unit):
    """One matrix piece X, seen by the base optimizer as L X R^T (L, R optional rotations)."""

    def __init__(
        self, piece: _Piece, left: BlockRotation | None = None, right: BlockRotation | None = None
    ) -> None:
        super().__init__([piece], piece.view(piece.param).shape)
        self.left = left
        self.right = right

    def rotate(self, values: Sequence[Tensor]) -> Tensor:
        matrix = self.pieces[0].matrix(values[0]).to(self.shadow.dtype)
        if self.right is not None:
            matrix = self.right.apply(matrix)
        if self.left is not None:
            matrix = self.left.apply(matrix.mT).mT
        return self.pieces[0].from_matrix(matrix)

    def unrotate(self, rotated: Tensor) -> list[Tensor]:
        matrix = self.pieces[0].matrix(rotated)
        if self.left is not None:
            matrix = self.left.apply_transpose(matrix.mT).mT
        if self.right is not None:
            matrix = self.right.apply_transpose(matrix)
        return [self.pieces[0].from_matrix(matrix)]


class _SVD(_Matrix):
    """A matrix piece in the singular bases of its gradient: U^T X V."""

    def refresh(self, grads: Sequence[Tensor]) -> None:
        gradient = self.pieces[0].matrix(grads[0]).to(self.shadow.dtype)
        u, _, vh = torch.linalg.svd(gradient, full_matrices=True)
        self.left = BlockRotation.dense(u.mT.contiguous())
        self.right = BlockRotation.dense(vh.contiguous())

    def bases(self) -> tuple[Tensor, Tensor] | None:
        """(U, V), or None before the first refresh."""
        if self.left is None or self.right is None:
            return None
        return self.left.block.mT, self.right.block.mT

    def set_bases(self, bases: tuple[Tensor, Tensor] | None) -> None:
        if bases is None:
            self.left = self.right = None
            return
        u, v = (basis.to(self.shadow.device, self.shadow.dtype) for basis in bases)
        self.left = BlockRotation.dense(u.mT.contiguous())
        self.right = BlockRotation.dense(v.mT.contiguous())


class RotatedOptimizer(torch.optim.Optimizer):
    """``base_cls`` (any ``torch.optim.Optimizer``) run in a rotated basis; see the module doc.

    ``scope``: one of ``SCOPES``. ``block_size``: the size of the Haar blocks.
    ``seed``: draws every rotation. ``svd_every``: steps between SVD basis updates.
    ``module``: the model, to name plain tensors and recognise embedding tables.
    ``fused_qkv``: names of further parameters to split into Q, K, V row blocks (those
    whose module is named ``qkv`` or ``c_attn`` are split anyway).
    ``layer_types``: rotate only the parameters of these types (``LAYER_TYPES``, by
    ``parameter_types``; Zhang, Maes et al.'s rotation per layer type), the others staying
    in the standard basis; empty (the default) rotates every parameter.
    ``weight_decay`` (default 0) is decoupled and applied in the standard basis:
    ``p <- p * (1 - lr * weight_decay)`` for parameters with a gradient; the base optimizer
    gets none. Every other keyword goes to ``base_cls``.

    A unit whose parameters all lack a gradient is skipped for the step; a missing gradient
    among others counts as zero. ``base`` is the base optimizer (its state is on the
    shadows); ``rotate`` / ``unrotate`` convert between the two bases. Parameter groups
    are fixed at construction.
    """

    def __init__(
        self,
        params: Iterable[Any],
        base_cls: type[torch.optim.Optimizer],
        scope: str = "global",
        block_size: int = DEFAULT_BLOCK_SIZE,
        seed: int = 0,
        svd_every: int = DEFAULT_SVD_EVERY,
        *,
        module: nn.Module | None = None,
        fused_qkv: Collection[str] = (),
        layer_types: Collection[str] = (),
        **base_kwargs: Any,
    ) -> None:
        if scope not in SCOPES:
            raise ValueError(f"unknown rotation scope {scope!r}; expected one of {SCOPES}")
        if block_size < 1 or svd_every < 1:
            raise ValueError(
                f"block_size and svd_every must be >= 1, got {block_size}, {svd_every}"
            )
        self.scope, self.block_size, self.seed, self.svd_every = scope, block_size, seed, svd_every
        self._steps = 0
        self._frozen = False
        weight_decay = base_kwargs.pop("weight_decay", 0.0)
        super().__init__(params, {**base_kwargs, "weight_decay": weight_decay})
        names, layouts = _module_info(module)
        layer_types = frozenset(layer_types)
        self.layer_types = sorted(layer_types)
        if not layer_types <= set(LAYER_TYPES):
            raise ValueError(
                f"unknown layer types {sorted(layer_types - set(LAYER_TYPES))}; "
                f"expected some of {LAYER_TYPES}"
            )
        named = dict(module.named_parameters()) if module is not None else {}
        types = {named[n]: t for n, t in parameter_types(module).items()} if module else {}
        generator = torch.Generator().manual_seed(seed)
        self._units: list[list[_Unit]] = []
        base_groups = []
        for group in self.param_groups:
            group_names = group.get("param_names") or [names.get(p) for p in group["params"]]
            pieces = [
                _pieces(
                    p,
                    name,
                    layouts[p] if p in layouts else matrix_layout(p.shape),
                    set(fused_qkv),
                )
                for p, name in zip(group["params"], group_names)
            ]
            rotated = [
                not layer_types or types.get(p, _type_of(name, p)) in layer_types
                for p, name in zip(group["params"], group_names)
            ]
            units = _build_units(scope, pieces, generator, block_size, rotated)
            self._units.append(units)
            options = {k: v for k, v in group.items() if k not in ("params", "param_names")}
            options.pop("weight_decay")
            base_groups.append({"params": [unit.shadow for unit in units], **options})
        if _accepts_weight_decay(base_cls):
            base_kwargs["weight_decay"] = 0.0
        self.base = base_cls(base_groups, **base_kwargs)
        for group, base_group in zip(self.param_groups, self.base.param_groups):
            for key, value in base_group.items():
                if key not in ("params", "weight_decay"):
                    group.setdefault(key, value)
        self.defaults = {**self.base.defaults, "weight_decay": weight_decay}
        self._frozen = True

    def __getstate__(self) -> dict[str, Any]:
        """Everything, the base optimizer and the rotations included (torch keeps only the
        defaults, state and groups), so that ``copy.deepcopy`` and pickle give a working copy."""
        return {**super().__getstate__(), **self.__dict__}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Only during construction: the rotations are fixed once built."""
        if self._frozen:
            raise NotImplementedError("RotatedOptimizer's parameter groups are fixed")
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One base-optimizer step in the rotated basis, then decoupled weight decay."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        refresh = self._steps % self.svd_every == 0
        for group, base_group in zip(self.param_groups, self.base.param_groups):
            for key in base_group:
                if key not in ("params", "weight_decay") and key in group:
                    base_group[key] = group[key]  # e.g. an lr set by a scheduler
        active = [unit for unit in self._all_units() if _load_shadow(unit, refresh)]
        before = [unit.shadow.clone() for unit in active]
        self.base.step()
        for group in self.param_groups:
            if group["weight_decay"] != 0:
                for p in group["params"]:
                    if p.grad is not None:
                        p.mul_(1 - group["lr"] * group["weight_decay"])
        for unit, old in zip(active, before):
            for piece, delta in zip(unit.pieces, unit.unrotate(unit.shadow - old)):
                piece.view(piece.param).add_(delta)
            unit.shadow.grad = None
        self._steps += 1
        return loss

    def rotate(self, tensors: Mapping[Tensor, Tensor]) -> dict[Tensor, Tensor]:
        """Standard-basis tensors keyed by parameter -> rotated tensors keyed by shadow
        (``base``'s parameters); a parameter missing from ``tensors`` counts as zero."""
        out = {}
        for unit in self._all_units():
            values = [
                piece.view(
                    tensors[piece.param]
                    if piece.param in tensors
                    else torch.zeros_like(piece.param)
                )
                for piece in unit.pieces
            ]
            out[unit.shadow] = unit.rotate(values)
        return out

    def unrotate(self, tensors: Mapping[Tensor, Tensor]) -> dict[Tensor, Tensor]:
        """Rotated tensors keyed by shadow -> standard-basis tensors keyed by parameter, for
        the parameters all of whose shadows are in ``tensors``."""
        out: dict[Tensor, Tensor] = {}
        missing: set[Tensor] = set()
        for unit in self._all_units():
            if unit.shadow not in tensors:
                missing.update(piece.param for piece in unit.pieces)
                continue
            for piece, value in zip(unit.pieces, unit.unrotate(tensors[unit.shadow])):
                full = out.setdefault(piece.param, torch.zeros_like(piece.param))
                piece.view(full).copy_(value)
        return {p: value for p, value in out.items() if p not in missing}

    def state_dict(self) -> dict[str, Any]:
        """Torch's state dict plus the base optimizer's and the rotation state (SVD bases)."""
        state = super().state_dict()
        state["base"] = self.base.state_dict()
        state["rotation"] = {
            "scope": self.scope,
            "seed": self.seed,
            "block_size": self.block_size,
            "layer_types": self.layer_types,
            "steps": self._steps,
            "svd_bases": [unit.bases() for unit in self._all_units() if isinstance(unit, _SVD)],
        }
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a ``state_dict`` from a RotatedOptimizer built with the same scope, seed, block
        size and layer types (another would put the moments on other coordinates)."""
        state = dict(state_dict)
        base, rotation = state.pop("base"), state.pop("rotation")
        mine = (self.scope, self.seed, self.block_size, self.layer_types)
        theirs = (
            rotation["scope"],
            rotation["seed"],
            rotation["block_size"],
            rotation.get("layer_types", []),
        )
        if mine != theirs:
            raise ValueError(
                f"state dict has (scope, seed, block_size, layer_types) {theirs}, not {mine}"
            )
        super().load_state_dict(state)
        self.base.load_state_dict(base)
        self._steps = rotation["steps"]
        svd_units = [unit for unit in self._all_units() if isinstance(unit, _SVD)]
        for unit, bases in zip(svd_units, rotation["svd_bases"], strict=True):
            unit.set_bases(bases)

    def _all_units(self) -> list[_Unit]:
        return [unit for units in self._units for unit in units]


def _type_of(name: str | None, param: Tensor) -> str:
    """A parameter's layer type from its name alone (``other`` without one)."""
    return "other" if name is None else layer_type(name, param)


def _load_shadow(unit: _Unit, refresh_svd: bool) -> bool:
    """Put the rotated weights and gradient on ``unit``'s shadow (refreshing an SVD basis when
    due); False, and no gradient, when none of the unit's parameters has a gradient."""
    grads = [piece.param.grad for piece in unit.pieces]
    if all(grad is None for grad in grads):
        unit.shadow.grad = None
        return False
    if any(grad is not None and grad.is_sparse for grad in grads):
        raise RuntimeError("RotatedOptimizer does not support sparse gradients")
    views = [
        piece.view(torch.zeros_like(piece.param) if grad is None else grad)
        for piece, grad in zip(unit.pieces, grads)
    ]
    if isinstance(unit, _SVD) and (refresh_svd or unit.left is None):
        unit.refresh(views)
    unit.shadow.copy_(unit.rotate([piece.view(piece.param) for piece in unit.pieces]))
    unit.shadow.grad = unit.rotate(views)
    return True


def _module_info(
    module: nn.Module | None,
) -> tuple[dict[Tensor, str], dict[Tensor, MatrixLayout | None]]:
    """Parameter names, and each parameter's matrix view, of ``module``."""
    if module is None:
        return {}, {}
    layouts = module_layouts(module)
    named = dict(module.named_parameters())
    return {p: name for name, p in named.items()}, {p: layouts[name] for name, p in named.items()}


def _pieces(
    param: Tensor, name: str | None, layout: MatrixLayout | None, fused_names: set[str]
) -> list[tuple[str | None, _Piece]]:
    """A parameter as (layer key, piece) pairs: three row blocks for a fused QKV tensor."""
    layer = None if name is None else name.rpartition(".")[0] or name
    module_name = "" if layer is None else layer.rpartition(".")[2]
    fused = name is not None and (module_name in FUSED_QKV_MODULES or name in fused_names)
    if not fused:
        return [(layer, _Piece(param, layout=layout))]
    rows = param.shape[0]
    if rows % 3 != 0:
        raise ValueError(f"fused QKV parameter {name} has {rows} rows, not a multiple of 3")
    third = rows // 3
    block = matrix_layout((third, *param.shape[1:]))
    return [
        (f"{layer}:{part}", _Piece(param, slice(i * third, (i + 1) * third), block))
        for i, part in enumerate("qkv")
    ]


def _build_units(
    scope: str,
    pieces: list[list[tuple[str | None, _Piece]]],
    generator: torch.Generator,
    block_size: int,
    rotated: list[bool],
) -> list[_Unit]:
    """The units of one parameter group under ``scope``: the parameters not ``rotated`` (by
    ``layer_types``) first, each alone in the standard basis, then the rotated ones."""
    if scope == "none":
        return [_Identity(_Piece(named[0][1].param)) for named in pieces]
    units: list[_Unit] = [
        _Identity(_Piece(named[0][1].param)) for named, keep in zip(pieces, rotated) if not keep
    ]
    pieces = [named for named, keep in zip(pieces, rotated) if keep]
    flat = [pair for named in pieces for pair in named]
    if scope == "global":
        if flat:
            units.append(_Flat([piece for _, piece in flat], generator, block_size))
        return units
    if scope == "layer":
        layers: dict[Any, list[_Piece]] = {}
        for key, piece in flat:
            layers.setdefault(key if key is not None else id(piece), []).append(piece)
        return units + [_Flat(layer, generator, block_size) for layer in layers.values()]
    for named in pieces:
        if named[0][1].layout is None:
            units.append(_Identity(_Piece(named[0][1].param)))
            continue
        for _, piece in named:
            units.append(_matrix_unit(scope, piece, generator, block_size))
    return units


def _matrix_unit(scope: str, piece: _Piece, generator: torch.Generator, block_size: int) -> _Unit:
    """The ``output``/``input``/``svd`` unit of one matrix piece."""
    if scope == "svd":
        return _SVD(piece)
    rows, cols = piece.matrix(piece.view(piece.param)).shape
    param = piece.param
    if scope == "output":
        return _Matrix(
            piece, right=BlockRotation.haar(cols, block_size, generator, param.dtype, param.device)
        )
    return _Matrix(
        piece, left=BlockRotation.haar(rows, block_size, generator, param.dtype, param.device)
    )


def _accepts_weight_decay(base_cls: type[torch.optim.Optimizer]) -> bool:
    """Whether ``base_cls`` takes a ``weight_decay`` argument (then it is forced to 0)."""
    return "weight_decay" in inspect.signature(base_cls.__init__).parameters
