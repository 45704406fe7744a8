"""Model families by name, as timm's ``create_model``: ``create_model("cnn", shape, k, width=32)``.

Built-in families are small enough to train thousands of times: an MLP and a
CNN with depth, width and dropout as parameters, DomainBed's MNIST CNN, and
Network-in-Network. Any other name is looked up in timm (``resnet18``,
``vit_tiny_patch16_224``, ...; prefix ``timm:`` to be explicit).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}
SIZE_PARAMETERS = frozenset({"depth", "width", "dropout"})
# Families sized by the objective's depth, width and dropout: those whose factory takes them.
SIZED_FAMILIES: set[str] = set()


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a model factory ``f(input_shape, num_classes, **params) -> nn.Module``; one
    that takes ``depth``, ``width`` and ``dropout`` is a sized family."""

    def wrap(factory: ModelFactory) -> ModelFactory:
        MODELS[name] = factory
        if SIZE_PARAMETERS.issubset(inspect.signature(factory).parameters):
            SIZED_FAMILIES.add(name)
        return factory

    return wrap


@register("mlp")
def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int = 2,
    width: int = 128,
    dropout: float = 0.0,
) -> nn.Module:
    """``depth`` hidden layers of ``width`` ReLU units on the flattened input."""
    check_size(depth=depth, width=width, dropout=dropout)
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = int(torch.tensor(input_shape).prod())
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.ReLU(), nn.Dropout(dropout)]
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


@register("cnn")
def cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int = 2,
    width: int = 32,
    dropout: float = 0.0,
) -> nn.Module:
    """``depth`` 3x3 conv-ReLU blocks of ``width`` channels (stride 2 after the first),
    global average pooling, dropout, and a linear head."""
    check_size(depth=depth, width=width, dropout=dropout)
    layers: list[nn.Module] = []
    channels = input_shape[0]
    for i in range(depth):
        layers += [nn.Conv2d(channels, width, 3, stride=1 if i == 0 else 2, padding=1), nn.ReLU()]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout)]
    layers.append(nn.Linear(channels, num_classes))
    return nn.Sequential(*layers)


@register("mnist_cnn")
def mnist_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """DomainBed's MNIST_CNN: 4 conv layers (64, 128, 128, 128) with GroupNorm(8),
    global average pooling to 128-d features, and a linear classifier."""
    widths = (64, 128, 128, 128)
    layers: list[nn.Module] = []
    channels = input_shape[0]
    for i, width in enumerate(widths):
        stride = 2 if i == 1 else 1
        layers += [
            nn.Conv2d(channels, width, 3, stride=stride, padding=1),
            nn.ReLU(),
            nn.GroupNorm(8, width),
        ]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


@register("nin")
def network_in_network(
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int = 2,
    width: int = 96,
    dropout: float = 0.0,
) -> nn.Module:
    """Network-in-Network as in Jiang et al. (2020): ``depth`` NiN blocks (3x3 conv then two
    1x1 convs, each with BatchNorm and ReLU; stride 2 in the first conv of each block), then
    a 1x1 conv to ``num_classes`` channels and global average pooling."""
    check_size(depth=depth, width=width, dropout=dropout)
    layers: list[nn.Module] = []
    channels = input_shape[0]
    for _ in range(depth):
        for kernel, stride in ((3, 2), (1, 1), (1, 1)):
            layers += [
                nn.Conv2d(channels, width, kernel, stride, padding=kernel // 2),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            channels = width
        layers.append(nn.Dropout(dropout))
    layers += [nn.Conv2d(channels, num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


@register("char_gpt")
def char_gpt(
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int = 2,
    width: int = 64,
    dropout: float = 0.0,
) -> nn.Module:
    """A small character-level GPT (``shiftbench.gpt.CharGPT``): ``depth`` blocks of width
    ``width`` with one head per 32 channels, over sequences of ``input_shape[0]`` tokens
    and a vocabulary of ``num_classes`` characters."""
    from shiftbench.gpt import CharGPT

    check_size(depth=depth, width=width, dropout=dropout)
    return CharGPT(num_classes, input_shape[0], depth, max(1, width // 32), width, dropout)


@register("timm_vit")
def timm_vit(
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int = 2,
    width: int = 64,
    dropout: float = 0.0,
) -> nn.Module:
    """timm's VisionTransformer sized for small images: ``depth`` blocks of width ``width``
    with one head per 32 channels, and square patches of 2 pixels below 32 (a 4x4 grid on
    8x8 digits), 4 from 32 (the usual CIFAR ViT) and 16 from 128 pixels up (ViT/S)."""
    from timm.models.vision_transformer import VisionTransformer

    check_size(depth=depth, width=width, dropout=dropout)
    channels, height, width_px = input_shape
    side = min(height, width_px)
    return VisionTransformer(
        img_size=(height, width_px),
        patch_size=16 if side >= 128 else 4 if side >= 32 else 2,
        in_chans=channels,
        num_classes=num_classes,
        embed_dim=width,
        depth=depth,
        num_heads=max(1, width // 32),
        drop_rate=dropout,
    )


@register("timm_resnet")
def timm_resnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int = 1,
    width: int = 16,
    dropout: float = 0.0,
) -> nn.Module:
    """timm's ResNet with BasicBlocks: timm's 64-channel stem, then four stages of ``depth``
    blocks and ``width``, 2x, 4x, 8x channels (``depth=2, width=64`` is ResNet-18). Below
    64 pixels the stem is the CIFAR one (a 3x3 stride-1 conv, no max-pool), so 8x8 digits
    keep their pixels."""
    from timm.models.resnet import BasicBlock, ResNet

    check_size(depth=depth, width=width, dropout=dropout)
    model = ResNet(
        BasicBlock,
        layers=(depth,) * 4,
        num_classes=num_classes,
        in_chans=input_shape[0],
        channels=(width, 2 * width, 4 * width, 8 * width),
        drop_rate=dropout,
    )
    if min(input_shape[1:]) < 64:
        stem = model.bn1.num_features
        model.conv1 = nn.Conv2d(input_shape[0], stem, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def check_size(depth: int, width: int, dropout: float) -> None:
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def timm_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    pretrained_file: str | None = None,
    **kwargs: object,
) -> nn.Module:
    """A timm model for this input; ImageNet weights from ``pretrained_file`` when given
    (never downloaded: runs must work offline). The classifier head is always fresh."""
    import timm

    model = timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=input_shape[0], **kwargs
    )
    if pretrained_file:
        state = _load_weights(Path(pretrained_file))
        head = {k for k in state if k.startswith(model.default_cfg.get("classifier", "fc"))}
        missing, _ = model.load_state_dict(
            {k: v for k, v in state.items() if k not in head}, strict=False
        )
        if [k for k in missing if not k.startswith(model.default_cfg.get("classifier", "fc"))]:
            raise ValueError(f"{pretrained_file}: weights do not match timm model {name!r}")
    return model


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def create_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **params: object
) -> nn.Module:
    """Instantiate a registered family, or a timm model (``timm:`` prefix optional)."""
    if name in MODELS:
        return MODELS[name](tuple(input_shape), num_classes, **params)
    import timm

    timm_name = name.removeprefix("timm:")
    if not timm.is_model(timm_name):
        raise KeyError(
            f"unknown model {name!r}; built-in: {', '.join(sorted(MODELS))}, "
            "or any timm model name"
        )
    return timm_model(timm_name, tuple(input_shape), num_classes, **params)


def is_model(name: str) -> bool:
    """Whether ``create_model`` knows ``name`` (a built-in family or a timm model)."""
    if name in MODELS:
        return True
    import timm

    return timm.is_model(name.removeprefix("timm:"))


def available() -> list[str]:
    """Built-in family names (timm names are accepted too)."""
    return sorted(MODELS)
