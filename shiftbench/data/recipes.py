"""DomainBed's ColoredMNIST and RotatedMNIST recipes, for any grey image set.

Both recipes take grey images ``(N, H, W)`` (uint8 in [0, 255] or float in
[0, 1]) with their int labels, shuffle them with a seeded generator and deal
them out round-robin into one environment per parameter (DomainBed's
``images[i::n_envs]``), so MNIST and the bundled 8x8 digits share one recipe.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from shiftbench.data.environments import Environment

COLOR_FLIP_PROBS = (0.1, 0.2, 0.9)
LABEL_NOISE = 0.25
ANGLES = (0, 15, 30, 45, 60, 75)


def as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """Grey images as float32 in [0, 1]: uint8 is divided by 255, floats are kept."""
    if images.dtype == torch.uint8:
        return images.float().div(255.0)
    return images.float()


def shuffled_parts(
    images: torch.Tensor, labels: torch.Tensor, n_parts: int, generator: torch.Generator
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffle, then deal the examples into ``n_parts`` near-equal parts (``[i::n_parts]``)."""
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(
            f"expected images (N, H, W) and N labels, got {tuple(images.shape)} and {len(labels)}"
        )
    perm = torch.randperm(len(images), generator=generator)
    images, labels = images[perm], labels[perm]
    return [(images[i::n_parts], labels[i::n_parts]) for i in range(n_parts)]


def bernoulli(p: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` independent 0/1 draws (int64) that are 1 with probability ``p``."""
    return (torch.rand(n, generator=generator) < p).long()


def color_env_name(flip_prob: float) -> str:
    """DomainBed's name for a colour environment: sign and strength of the colour-label link."""
    sign = "+" if flip_prob < 0.5 else "-"
    return f"{sign}{round(100 * max(flip_prob, 1.0 - flip_prob))}%"


def color_part(
    images: torch.Tensor,
    labels: torch.Tensor,
    flip_prob: float,
    label_noise: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ColoredMNIST environment: noisy binary label, colour = label flipped w.p. ``flip_prob``.

    As in DomainBed, channel ``1 - colour`` is zeroed: colour 0 is red (channel 0),
    colour 1 is green (channel 1).
    """
    y = (labels < 5).long() ^ bernoulli(label_noise, len(labels), generator)
    colors = y ^ bernoulli(flip_prob, len(labels), generator)
    x = as_unit_float(images).unsqueeze(1).repeat(1, 2, 1, 1)
    x[torch.arange(len(x)), 1 - colors] = 0.0
    return x, y


def colored_environments(
    images: torch.Tensor,
    labels: torch.Tensor,
    flip_probs: Sequence[float] = COLOR_FLIP_PROBS,
    label_noise: float = LABEL_NOISE,
    seed: int = 0,
) -> list[Environment]:
    """ColoredMNIST: 2-channel images, label ``digit < 5`` with noise, spurious colour per env."""
    generator = torch.Generator().manual_seed(seed)
    parts = shuffled_parts(images, labels, len(flip_probs), generator)
    envs = []
    for (part_x, part_y), flip in zip(parts, flip_probs, strict=True):
        x, y = color_part(part_x, part_y, flip, label_noise, generator)
        envs.append(Environment(color_env_name(flip), x, y))
    return envs


def rotate_images(images: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate grey images ``(N, H, W)`` counter-clockwise by ``angle`` degrees.

    Bilinear, about the image centre, zero fill, size kept: DomainBed's
    ``rotate(x, angle, fill=(0,), interpolation=BILINEAR)``, done on float tensors in
    one batch (so without PIL's uint8 rounding). Returns ``(N, 1, H, W)``.
    """
    x = as_unit_float(images).unsqueeze(1)
    if angle % 360 == 0:
        return x.clone()
    from torchvision.transforms import InterpolationMode  # imported when used: a second
    from torchvision.transforms.functional import rotate  # that validating a study saves

    return rotate(x, float(angle), interpolation=InterpolationMode.BILINEAR, fill=[0.0])


def rotated_environments(
    images: torch.Tensor, labels: torch.Tensor, angles: Sequence[float] = ANGLES, seed: int = 0
) -> list[Environment]:
    """RotatedMNIST: shuffle, split into ``len(angles)`` parts, rotate part i by ``angles[i]``."""
    generator = torch.Generator().manual_seed(seed)
    parts = shuffled_parts(images, labels, len(angles), generator)
    return [
        Environment(f"{angle:g}", rotate_images(x, angle), y.long())
        for (x, y), angle in zip(parts, angles, strict=True)
    ]
