"""Parameter views: layer types from names, and the matrix each parameter is seen as."""

from __future__ import annotations

import copy

import pytest
import torch
from training_rotations_nets import MODEL, make_rotated, nonzero_shadows

from shiftbench.models.registry import create_model
from shiftbench.training.parameter_views import (
    MatrixLayout,
    layer_type,
    matrix_layout,
    module_layouts,
    parameter_types,
)
from shiftbench.training.rotations import RotatedOptimizer


def test_layer_type_from_names() -> None:
    cases = {
        "transformer.wte.weight": "embed",
        "tok_embeddings.weight": "embed",
        "lm_head.weight": "head",
        "blocks.0.attn.qkv.weight": "attn",
        "h.1.attn.c_attn.weight": "attn",
        "blocks.0.mlp.fc1.weight": "mlp",
        "h.0.mlp.c_proj.weight": "mlp",
        "features.3.weight": "conv",
        "layer1.0.conv1.weight": "conv",
        "patch_embed.proj.weight": "embed",
        "0.weight": "other",
    }
    for name, expected in cases.items():
        param = torch.zeros(2, 2, 3, 3) if name == "features.3.weight" else torch.zeros(2, 2)
        assert layer_type(name, param) == expected, name


def test_embedding_tables_are_transposed_for_output_scope() -> None:
    """An embedding's output features are its columns: one column mixes only with itself."""
    model = copy.deepcopy(MODEL)
    table = model.emb.weight
    column = torch.zeros_like(table)
    column[:, 1] = torch.randn(5, dtype=table.dtype)
    optimizer = make_rotated("output", torch.optim.SGD, lr=0.1)(model)
    (shadow,) = nonzero_shadows(optimizer, {table: column})
    assert shadow[:, [0, 2, 3]].abs().max() == 0
    torch.testing.assert_close(shadow[:, 1].norm(), column[:, 1].norm())


def _line(name: str, shape: torch.Size, index: tuple[int, ...], scope: str) -> tuple:
    """Where ``scope`` may move a unit value at ``index`` of a timm parameter: the intended
    axis, written out per parameter kind (the rules of the parameter_views module doc)."""
    if name == "pos_embed":  # (1, N, D): a table of positions, one feature across positions
        _, n, d = index
        return (0, slice(None), d) if scope == "output" else (0, n, slice(None))
    if scope == "output":  # the weights ending at one output neuron
        return (index[0], *[slice(None)] * (len(shape) - 1))
    return (slice(None), *index[1:])  # the weights leaving one input coordinate


@pytest.mark.parametrize("model_name", ["timm_vit", "timm_resnet"])
@pytest.mark.parametrize("scope", ["output", "input"])
def test_matrix_scopes_act_within_the_intended_axis_of_every_timm_parameter(
    model_name: str, scope: str
) -> None:
    """Every parameter of a timm ViT and ResNet: a unit value on one coordinate is mixed only
    along the intended axis (pos_embed never mixes the whole table; cls_token, biases and
    norms stay put), and mixed at all where that axis is longer than one."""
    torch.manual_seed(0)
    model = create_model(model_name, (1, 8, 8), 4, depth=1, width=8).double()
    optimizer = RotatedOptimizer(
        model.named_parameters(), torch.optim.SGD, scope=scope, block_size=4, module=model, lr=0.1
    )
    generator = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        index = tuple(int(torch.randint(n, (), generator=generator)) for n in p.shape)
        value = torch.zeros_like(p)
        value[index] = 1.0
        (shadow,) = nonzero_shadows(optimizer, {p: value})
        if p.squeeze().ndim < 2:  # a bias, a norm, cls_token (1, 1, D): not rotated
            torch.testing.assert_close(shadow, value, rtol=0, atol=0, msg=name)
            continue
        if shadow.shape != p.shape:  # one of Q, K, V of a fused weight
            third = p.shape[0] // 3
            value = value[index[0] // third * third :][:third]
            index = (index[0] % third, *index[1:])
        keep = torch.zeros_like(shadow, dtype=torch.bool)
        keep[_line(name, shadow.shape, index, scope)] = True
        assert shadow[~keep].abs().max() == 0, f"{name} mixes across the {scope} axis"
        if keep.sum() > 1:
            assert (shadow[keep] != 0).sum() > 1, f"{name} is not rotated in {scope}"
        torch.testing.assert_close(shadow.norm(), value.norm())


def test_matrix_views_follow_one_rule_per_shape() -> None:
    """The rules of the module doc, on shapes worked out by hand: vectors, weights (a conv
    kernel flattened), embedding tables, free parameters without their broadcast dimensions."""
    assert matrix_layout((7,)) is None
    assert matrix_layout((4, 2, 3, 3)) == MatrixLayout((4, 18))
    assert matrix_layout((6, 4), embedding=True) == MatrixLayout((6, 4), table=True)
    assert matrix_layout((1, 7, 5)) == MatrixLayout((1, 35))
    assert matrix_layout((1, 7, 5), free=True) == MatrixLayout((7, 5), table=True)
    assert matrix_layout((1, 1, 5), free=True) is None
    torch.manual_seed(0)
    vit = module_layouts(create_model("timm_vit", (1, 8, 8), 4, depth=1, width=8))
    assert vit["cls_token"] is None
    assert vit["pos_embed"] == MatrixLayout((1 + 4 * 4, 8), table=True)  # cls + 4x4 patches
    assert vit["patch_embed.proj.weight"] == MatrixLayout((8, 1 * 2 * 2))
    assert vit["blocks.0.attn.qkv.weight"] == MatrixLayout((3 * 8, 8))
    assert vit["blocks.0.attn.qkv.bias"] is None
    assert module_layouts(MODEL)["emb.weight"] == MatrixLayout((5, 4), table=True)


def test_a_declared_classifier_is_the_head_whatever_its_name() -> None:
    model = create_model("timm_resnet", (1, 8, 8), 4, depth=1, width=8)
    types = parameter_types(model)
    assert layer_type("fc.weight", model.fc.weight) == "mlp"
    assert types["fc.weight"] == types["fc.bias"] == "head"
    assert types["conv1.weight"] == "conv"
