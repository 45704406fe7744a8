"""timm's VisionTransformer, sized by depth and width for small images."""

from __future__ import annotations

from torch import nn

from shiftbench.models.registry import check_size, register


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
