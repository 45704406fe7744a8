"""On-the-fly CIFAR-10-C corruptions: reference values, monotone severity, determinism."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from shiftbench.data.corruptions import (
    CORRUPTIONS,
    DEFOCUS_BLUR,
    GAUSSIAN_BLUR,
    corrupt,
    corrupted_environments,
)
from shiftbench.data.environments import Environment


def smooth_images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Natural-ish images: upsampled noise, so blurs and JPEG have something to remove."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, size // 4, size // 4, generator=generator)
    fine = torch.rand(n, channels, size, size, generator=generator)
    return 0.7 * F.interpolate(coarse, size=(size, size), mode="bilinear") + 0.3 * fine


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
@pytest.mark.parametrize("shape", [(1, 8), (2, 8), (3, 32)])
def test_severity_increases_distance_from_clean(name, shape):
    channels, size = shape
    x = smooth_images(16, channels, size)
    distances = [(corrupt(x, name, s) - x).abs().mean().item() for s in range(1, 6)]
    assert all(a < b for a, b in itertools.pairwise(distances)), distances
    out = corrupt(x, name, 3)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_deterministic_with_seed(name):
    x = smooth_images(4, 3, 16)
    torch.testing.assert_close(corrupt(x, name, 4, seed=7), corrupt(x, name, 4, seed=7))


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise"])
def test_noise_depends_on_seed(name):
    x = smooth_images(4, 3, 16)
    assert not torch.equal(corrupt(x, name, 4, seed=1), corrupt(x, name, 4, seed=2))


def test_gaussian_noise_has_the_cifar_c_scale():
    x = torch.full((64, 3, 32, 32), 0.5)
    noise = corrupt(x, "gaussian_noise", 5) - x
    assert noise.std().item() == pytest.approx(0.10, rel=0.02)


def test_gaussian_blur_matches_scipy():
    x = smooth_images(2, 3, 16)
    for severity, sigma in enumerate(GAUSSIAN_BLUR, start=1):
        ref = ndimage.gaussian_filter(x.double().numpy(), (0, 0, sigma, sigma), mode="nearest")
        np.testing.assert_allclose(corrupt(x, "gaussian_blur", severity), ref, atol=1e-5)


def test_defocus_blur_matches_make_cifar_c_kernel():
    x = smooth_images(2, 3, 16)
    for severity, (radius, alias) in enumerate(DEFOCUS_BLUR, start=1):
        grid = np.arange(-8, 9)
        disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).astype(float)
        taps = np.exp(-0.5 * (np.array([-1.0, 0.0, 1.0]) / alias) ** 2)
        kernel = ndimage.correlate(disk / disk.sum(), np.outer(taps, taps) / taps.sum() ** 2)
        ref = ndimage.correlate(x.double().numpy(), kernel[None, None], mode="mirror")
        np.testing.assert_allclose(corrupt(x, "defocus_blur", severity), ref, atol=1e-5)


def test_brightness_matches_hsv_value_shift():
    import colorsys

    x = smooth_images(1, 3, 8)
    out = corrupt(x, "brightness", 2)
    for r, c in [(0, 0), (3, 5), (7, 2)]:
        h, s, v = colorsys.rgb_to_hsv(*x[0, :, r, c].tolist())
        np.testing.assert_allclose(out[0, :, r, c], colorsys.hsv_to_rgb(h, s, v + 0.1), atol=1e-6)


def test_contrast_keeps_channel_means():
    x = smooth_images(3, 3, 16) * 0.8 + 0.1
    torch.testing.assert_close(
        corrupt(x, "contrast", 5).mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=1e-6, rtol=0
    )


def test_bad_arguments_are_rejected():
    x = smooth_images(1, 1, 8)
    with pytest.raises(KeyError, match="unknown corruption"):
        corrupt(x, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "contrast", 6)
    with pytest.raises(ValueError, match="N, C, H, W"):
        corrupt(x[0], "contrast", 1)


def test_corrupted_environments_names_and_labels():
    env = Environment("clean", smooth_images(5, 1, 8), torch.arange(5))
    envs = corrupted_environments(env, ["contrast", "jpeg_compression"], [1, 5])
    assert [e.name for e in envs] == [
        "contrast-1", "contrast-5", "jpeg_compression-1", "jpeg_compression-5",
    ]  # fmt: skip
    assert all(torch.equal(e.y, env.y) and e.x.shape == env.x.shape for e in envs)
