"""Network-in-Network, the family of Jiang et al. (2020)'s and Study 2's grids."""

from __future__ import annotations

from torch import nn

from shiftbench.models.registry import check_size, register


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
