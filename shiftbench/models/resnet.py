"""timm's ResNet with BasicBlocks, sized by depth and width, with a CIFAR stem below 64 px."""

from __future__ import annotations

from torch import nn

from shiftbench.models.registry import check_size, register


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
