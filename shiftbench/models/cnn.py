"""Plain CNNs: a sized conv stack (``cnn``) and DomainBed's fixed MNIST CNN (``mnist_cnn``)."""

from __future__ import annotations

from torch import nn

from shiftbench.models.registry import check_size, register


@register("cnn", vectorizable=True)
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


@register("mnist_cnn", vectorizable=True)
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
