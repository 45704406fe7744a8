"""Model families: output shapes, the MLP's parameter count in closed form, size checks, and
timm models (with offline weights files whose classifier head is always fresh)."""

import math

import pytest
import torch
from torch import nn

from shiftbench.models.registry import (
    CPU_VECTORIZED,
    SIZED_FAMILIES,
    VECTORIZABLE,
    available,
    check_size,
    create_model,
    is_model,
)

SHAPES = [(2, 8, 8), (1, 8, 8), (3, 16, 16)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "name, params",
    [
        ("mlp", {"depth": 2, "width": 16}),
        ("mlp", {"depth": 1, "width": 3, "dropout": 0.5}),
        ("cnn", {"depth": 3, "width": 8}),
        ("nin", {"depth": 2, "width": 8}),
        ("mnist_cnn", {}),
    ],
)
def test_output_shape(name, params, shape):
    torch.manual_seed(0)
    model = create_model(name, shape, 7, **params).eval()
    out = model(torch.rand(5, *shape))
    assert out.shape == (5, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("depth, width", [(1, 16), (2, 16), (3, 5)])
@pytest.mark.parametrize("shape, classes", [((2, 8, 8), 2), ((1, 8, 8), 10)])
def test_mlp_parameter_count_closed_form(depth, width, shape, classes):
    d = math.prod(shape)
    # first layer d*w + w, (depth-1) hidden layers w*w + w, head w*k + k
    expected = (d + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * classes
    assert n_params(create_model("mlp", shape, classes, depth=depth, width=width)) == expected


def test_cnn_parameter_count_closed_form():
    c, w, k, depth = 2, 8, 3, 3
    # 3x3 convs: c -> w, then (depth-1) times w -> w; linear head w -> k
    expected = (9 * c * w + w) + (depth - 1) * (9 * w * w + w) + (w * k + k)
    assert n_params(create_model("cnn", (c, 8, 8), k, depth=depth, width=w)) == expected


def test_mlp_dropout_layers_carry_the_rate():
    model = create_model("mlp", (1, 8, 8), 10, depth=3, width=4, dropout=0.25)
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.25, 0.25, 0.25]


@pytest.mark.parametrize("name", ["mlp", "cnn", "nin"])
@pytest.mark.parametrize(
    "params",
    [
        {"depth": 0},
        {"depth": -1},
        {"width": 0},
        {"dropout": 1.0},
        {"dropout": -0.1},
    ],
)
def test_bad_sizes_raise(name, params):
    with pytest.raises(ValueError):
        create_model(name, (1, 8, 8), 10, **params)


def test_sized_families_are_those_whose_factory_takes_the_sizes():
    expected = ["char_gpt", "cnn", "mlp", "nin", "timm_resnet", "timm_vit"]
    assert sorted(SIZED_FAMILIES) == expected


def test_check_size_accepts_the_edges():
    check_size(depth=1, width=1, dropout=0.0)
    check_size(depth=1, width=1, dropout=0.999)


def test_unknown_model_lists_the_built_ins():
    assert available() == ["char_gpt", "cnn", "mlp", "mnist_cnn", "nin", "timm_resnet", "timm_vit"]
    with pytest.raises(KeyError) as info:
        create_model("no_such_model_xyz", (1, 8, 8), 10)
    assert all(name in str(info.value) for name in available())
    assert not is_model("no_such_model_xyz")
    assert is_model("mlp") and is_model("resnet18") and is_model("timm:resnet18")


def test_timm_resnet18_on_small_images():
    torch.manual_seed(0)
    model = create_model("resnet18", (3, 32, 32), 10).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    # timm: prefix and a 2-channel input (in_chans follows the data)
    two = create_model("timm:resnet18", (2, 32, 32), 4).eval()
    assert two(torch.rand(2, 2, 32, 32)).shape == (2, 4)
    assert two.conv1.in_channels == 2


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_timm_weights_file_loads_body_and_keeps_a_fresh_head(tmp_path, suffix):
    torch.manual_seed(0)
    source = create_model("test_resnet", (3, 32, 32), 7)
    state = source.state_dict()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save(state, path)
    else:
        safetensors = pytest.importorskip("safetensors.torch")
        safetensors.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    torch.manual_seed(1)
    model = create_model(
        "test_resnet", (3, 32, 32), 5, pretrained_file=str(path), pretrained_bn="train"
    )
    loaded = model.state_dict()
    body = [k for k in state if not k.startswith("fc")]
    assert body and all(torch.equal(loaded[k], state[k]) for k in body)
    assert loaded["fc.weight"].shape[0] == 5
    # the head is the fresh one of a model built with the same seed, not the source's
    torch.manual_seed(1)
    fresh = create_model("test_resnet", (3, 32, 32), 5)
    assert torch.equal(loaded["fc.weight"], fresh.state_dict()["fc.weight"])


def test_timm_weights_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        create_model("test_resnet", (3, 32, 32), 5, pretrained_file=str(tmp_path / "none.pt"))
    state = create_model("test_resnet", (3, 32, 32), 5).state_dict()
    body_key = next(k for k in state if k.endswith("weight") and not k.startswith("fc"))
    del state[body_key]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match="do not match"):
        create_model("test_resnet", (3, 32, 32), 5, pretrained_file=str(path))


def test_char_gpt_maps_token_blocks_to_per_token_logits():
    model = create_model("char_gpt", (16,), 30, depth=1, width=32)
    logits = model(torch.randint(0, 30, (3, 16)))
    assert logits.shape == (3, 16, 30)


def test_timm_resnet_family_at_resnet18_size_is_resnet18():
    """depth=2, width=64 on ImageNet-sized inputs has exactly timm's resnet18's parameters."""
    sized = create_model("timm_resnet", (3, 224, 224), 1000, depth=2, width=64)
    reference = create_model("resnet18", (3, 224, 224), 1000)
    assert n_params(sized) == n_params(reference) == 11_689_512


@pytest.mark.parametrize("shape", SHAPES)
def test_timm_resnet_family_keeps_small_images_whole(shape):
    torch.manual_seed(0)
    model = create_model("timm_resnet", shape, 5, depth=1, width=8).eval()
    assert model.conv1.stride == (1, 1) and isinstance(model.maxpool, nn.Identity)
    features = model.forward_features(torch.rand(2, *shape))
    # three stride-2 stages after a stride-1 stem
    assert features.shape == (2, 64, math.ceil(shape[1] / 8), math.ceil(shape[2] / 8))
    assert model(torch.rand(2, *shape)).shape == (2, 5)


@pytest.mark.parametrize("shape, patch", [((1, 8, 8), 2), ((3, 32, 32), 4), ((3, 224, 224), 16)])
def test_timm_vit_family_patches_and_heads(shape, patch):
    model = create_model("timm_vit", shape, 7, depth=1, width=64)
    assert model.patch_embed.proj.kernel_size == (patch, patch)
    tokens = (shape[1] // patch) * (shape[2] // patch)
    assert model.pos_embed.shape == (1, tokens + 1, 64)
    assert model.blocks[0].attn.num_heads == 2 and len(model.blocks) == 1
    if shape[1] <= 32:
        assert model.eval()(torch.rand(2, *shape)).shape == (2, 7)


def test_families_declare_what_can_be_vectorized():
    """Buffer-free families without dropout layers of their own declare themselves
    vectorizable; only the MLP is worth vectorizing on CPU (perf/ensemble.py)."""
    assert {"mlp", "cnn", "mnist_cnn"} == VECTORIZABLE
    assert {"mlp"} == CPU_VECTORIZED
    for name in VECTORIZABLE:
        model = create_model(name, (2, 8, 8), 3)
        assert not list(model.buffers()), name


def test_pretrained_batch_norms_are_folded_into_their_convolutions_by_default(tmp_path):
    """Naganuma et al.'s ResNet-50 (``remove_batch_norm_from_resnet``): no batch norm is left,
    the eval-mode features equal the source's, and training mode no longer changes them."""
    torch.manual_seed(0)
    source = create_model("timm:resnet50", (3, 32, 32), 7)
    with torch.no_grad():  # running statistics and affine parameters away from their init
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    path = tmp_path / "resnet50.pth"
    torch.save(source.state_dict(), path)
    fused = create_model("timm:resnet50", (3, 32, 32), 5, pretrained_file=str(path))
    kept = create_model(
        "timm:resnet50", (3, 32, 32), 5, pretrained_file=str(path), pretrained_bn="train"
    )
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in kept.modules()) == 53
    x = torch.rand(4, 3, 32, 32)
    expected = source.eval().forward_features(x)
    assert torch.allclose(fused.eval().forward_features(x), expected, rtol=1e-3, atol=1e-3)
    assert torch.allclose(fused.train().forward_features(x), expected, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(kept.train().forward_features(x), expected, rtol=1e-2, atol=1e-3)
    with pytest.raises(ValueError, match="pretrained_bn"):
        create_model("timm:resnet50", (3, 32, 32), 5, pretrained_file=str(path), pretrained_bn="x")
