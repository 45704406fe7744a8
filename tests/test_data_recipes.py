"""DomainBed's ColoredMNIST / RotatedMNIST recipes, checked against their defining properties."""

import pytest
import torch

from shiftbench.data.recipes import colored_environments, rotate_images, rotated_environments


def synthetic_digits(n: int, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 grey images with every pixel > 0 and random digit labels 0-9."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, size, size), generator=generator, dtype=torch.uint8)
    return images, torch.randint(0, 10, (n,), generator=generator)


def test_colored_rates_match_domainbed():
    images, digits = synthetic_digits(60_000)
    images[:, 0, 0] = digits.to(torch.uint8) + 1  # tag each image with its digit
    envs = colored_environments(images, digits, seed=0)
    assert [env.name for env in envs] == ["+90%", "+80%", "-90%"]
    for env, flip in zip(envs, (0.1, 0.2, 0.9)):
        red_on = env.x[:, 0].flatten(1).sum(1) > 0
        green_on = env.x[:, 1].flatten(1).sum(1) > 0
        assert torch.all(red_on ^ green_on)  # exactly one colour channel per image
        color = green_on.long()  # DomainBed: colour c keeps channel c
        tag = (env.x.sum(1)[:, 0, 0] * 255).round().long() - 1
        clean = (tag < 5).long()
        assert (env.y != clean).float().mean().item() == pytest.approx(0.25, abs=0.015)
        assert (color != env.y).float().mean().item() == pytest.approx(flip, abs=0.015)
        assert env.x.shape[1:] == (2, 8, 8) and env.x.dtype == torch.float32
        assert env.y.dtype == torch.int64


def test_colored_deterministic_and_seed_dependent():
    images, digits = synthetic_digits(300)
    a, b = (
        colored_environments(images, digits, seed=3),
        colored_environments(images, digits, seed=3),
    )
    c = colored_environments(images, digits, seed=4)
    assert all(torch.equal(x.x, y.x) and torch.equal(x.y, y.y) for x, y in zip(a, b))
    assert not torch.equal(a[0].y, c[0].y)


def test_colored_accepts_float_images_in_unit_range():
    images, digits = synthetic_digits(90)
    from_uint8 = colored_environments(images, digits, seed=1)
    from_float = colored_environments(images.float() / 255, digits, seed=1)
    for u, f in zip(from_uint8, from_float):
        torch.testing.assert_close(u.x, f.x)


def test_rotated_parts_are_equal_and_rotated():
    images, digits = synthetic_digits(600)
    envs = rotated_environments(images, digits, seed=0)
    assert [env.name for env in envs] == ["0", "15", "30", "45", "60", "75"]
    assert [len(env) for env in envs] == [100] * 6
    assert sum(env.y.bincount(minlength=10) for env in envs).tolist() == digits.bincount().tolist()
    # environment 0 is unrotated: its images are a subset of the originals
    originals = {bytes(img.flatten().tolist()) for img in images}
    first = (envs[0].x[:, 0] * 255).round().to(torch.uint8)
    assert all(bytes(img.flatten().tolist()) in originals for img in first)


def test_rotation_by_90_degrees_is_rot90():
    image = torch.rand(3, 28, 28)
    torch.testing.assert_close(rotate_images(image, 90)[:, 0], torch.rot90(image, 1, (-2, -1)))


def test_rotation_is_counter_clockwise_about_the_centre():
    image = torch.zeros(1, 9, 9)
    image[0, 4, 8] = 1.0  # right of the centre
    rotated = rotate_images(image, 45)[0, 0]
    row, col = divmod(int(rotated.argmax()), 9)
    assert row < 4 and col > 4  # moved up and stays right: counter-clockwise
