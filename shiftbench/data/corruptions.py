"""CIFAR-10-C corruptions computed on the fly, for any float image batch (N, C, H, W) in [0, 1].

Constants are those of Hendrycks & Dietterich's ``make_cifar_c.py`` (severity
1 to 5), so a corruption of a CIFAR-10 image reproduces the released
CIFAR-10-C distribution (before its uint8 rounding); the same functions shift
8x8 digits or any other small image set:

=================  ===========================================================
gaussian_noise     x + N(0, c^2), c = 0.04, 0.06, 0.08, 0.09, 0.10
shot_noise         Poisson(c x) / c, c = 500, 250, 100, 75, 50
gaussian_blur      Gaussian filter (nearest edges, truncate 4), sigma = 0.4, 0.6, 0.7, 0.8, 1
defocus_blur       disk of radius r smoothed by a 3x3 Gaussian of sigma s (reflected edges),
                   (r, s) = (0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)
contrast           (x - m) c + m, m the per-image channel mean, c = 0.75, 0.5, 0.4, 0.3, 0.15
brightness         HSV value + c, c = 0.05, 0.1, 0.15, 0.2, 0.3
jpeg_compression   PIL JPEG round trip at quality 80, 65, 58, 50, 40
=================  ===========================================================

Every result is clipped to [0, 1]. Random corruptions draw from a CPU
generator seeded by the caller, so a (seed, corruption, severity) triple
always gives the same images.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from shiftbench.data.environments import Environment

SEVERITIES = (1, 2, 3, 4, 5)
GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT_NOISE = (500, 250, 100, 75, 50)
GAUSSIAN_BLUR = (0.4, 0.6, 0.7, 0.8, 1.0)
DEFOCUS_BLUR = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)
JPEG_QUALITY = (80, 65, 58, 50, 40)

Corruption = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]


def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise."""
    scale = GAUSSIAN_NOISE[severity - 1]
    return x + scale * torch.randn(x.shape, generator=generator, dtype=x.dtype)


def shot_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Poisson photon noise: fewer photons (lower c) is noisier."""
    rate = SHOT_NOISE[severity - 1]
    return torch.poisson(x.clamp(min=0.0) * rate, generator=generator) / rate


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """scipy's Gaussian filter taps: radius ``int(4 sigma + 0.5)``, normalized to sum 1."""
    radius = int(4.0 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    return (kernel / kernel.sum()).float()


def filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of ``x`` (N, C, H, W) with one 2-D kernel, edges by ``mode``."""
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    pad_h, pad_w = kh // 2, kw // 2
    if mode == "reflect" and (pad_h >= h or pad_w >= w):
        mode = "replicate"
    flat = F.pad(x.reshape(n * c, 1, h, w), (pad_w, pad_w, pad_h, pad_h), mode=mode)
    return F.conv2d(flat, kernel[None, None].to(x.dtype)).reshape(n, c, h, w)


def gaussian_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """skimage's ``gaussian(x, sigma)`` per channel (separable, nearest-edge padding)."""
    taps = gaussian_kernel1d(GAUSSIAN_BLUR[severity - 1])
    rows = filter2d(x, taps[None, :], "replicate")
    return filter2d(rows, taps[:, None], "replicate")


def disk_kernel(radius: float, alias_sigma: float) -> torch.Tensor:
    """``make_cifar_c``'s defocus kernel: a normalized aliased disk, then a 3x3 Gaussian blur."""
    half = math.ceil(radius) + 2
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).double()
    disk /= disk.sum()
    taps = torch.exp(
        -0.5 * (torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64) / alias_sigma) ** 2
    )
    taps /= taps.sum()
    blur = (taps[:, None] * taps[None, :])[None, None]
    return F.conv2d(disk[None, None], blur, padding=1)[0, 0].float()


def defocus_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Out-of-focus blur: convolution with a small smoothed disk."""
    return filter2d(x, disk_kernel(*DEFOCUS_BLUR[severity - 1]), "reflect")


def contrast(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Pull every pixel toward its image's channel mean."""
    factor = CONTRAST[severity - 1]
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * factor + means


def brightness(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Raise the HSV value (max over channels) by c, keeping hue and saturation.

    With hue and saturation fixed, RGB is proportional to the value, so the
    pixel is rescaled by ``v' / v``; a black pixel (v = 0) becomes grey ``v'``.
    Works for any number of channels (for one channel it is ``x + c``).
    """
    value = x.amax(dim=1, keepdim=True)
    new_value = (value + BRIGHTNESS[severity - 1]).clamp(0.0, 1.0)
    scaled = x * (new_value / value.clamp(min=1e-12))
    return torch.where(value > 0, scaled, new_value.expand_as(x))


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode one uint8 image (H, W) or (H, W, 3) as JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer))


def jpeg_compression(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """PIL JPEG at the severity's quality; RGB images as colour, other channels one by one."""
    quality = JPEG_QUALITY[severity - 1]
    pixels = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()
    if x.shape[1] == 3:
        out = np.stack([jpeg_round_trip(img.transpose(1, 2, 0), quality) for img in pixels])
        out = out.transpose(0, 3, 1, 2)
    else:
        out = np.stack([[jpeg_round_trip(ch, quality) for ch in img] for img in pixels])
    return torch.from_numpy(out.copy()).to(x.dtype) / 255.0


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "defocus_blur": defocus_blur,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "jpeg_compression": jpeg_compression,
}


def corrupt(x: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """Corrupt a float batch (N, C, H, W) in [0, 1]; same (seed, name, severity), same output."""
    if name not in CORRUPTIONS:
        raise KeyError(f"unknown corruption {name!r}; one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be in 1..5, got {severity!r}")
    if x.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
    generator = torch.Generator().manual_seed(seed)
    out = CORRUPTIONS[name](x.detach().float().cpu(), severity, generator)
    return out.clamp(0.0, 1.0).to(device=x.device, dtype=x.dtype)


def corrupted_environments(
    env: Environment,
    names: Sequence[str] = tuple(CORRUPTIONS),
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
) -> list[Environment]:
    """One environment ``<name>-<severity>`` per pair, each a corrupted copy of ``env``."""
    return [
        Environment(f"{name}-{severity}", corrupt(env.x, name, severity, seed), env.y)
        for name in names
        for severity in severities
    ]
