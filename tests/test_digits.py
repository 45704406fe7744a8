"""The offline digits: ColoredDigits (3 envs, binary labels, 2 channels, colour-label link 90%,
80%, 10%) and RotatedDigits (6 envs, 1 channel, 8x8, 10 classes), 1,797 digits in all."""

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.datasets import load_digits

from shiftbench.data.digits import (
    colored_digit_environments,
    digit_images,
    rotated_digit_environments,
)
from shiftbench.data.environments import DomainData
from shiftbench.data.recipes import colored_environments
from shiftbench.plugins import registry

N_DIGITS = 1797


@pytest.fixture(scope="module")
def sk_digits():
    bunch = load_digits()
    return bunch.images, bunch.target


def test_digit_images_are_sklearns_scaled_to_unit(sk_digits):
    images, labels = digit_images()
    assert images.shape == (N_DIGITS, 8, 8) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    np.testing.assert_allclose(images.numpy(), sk_digits[0] / 16.0)
    np.testing.assert_array_equal(labels.numpy(), sk_digits[1])


def test_colored_digits_environments():
    envs = colored_digit_environments()
    assert [e.name for e in envs] == ["+90%", "+80%", "-90%"]
    assert sum(len(e) for e in envs) == N_DIGITS
    assert sorted(len(e) for e in envs) == [599, 599, 599]
    for env in envs:
        assert env.x.shape[1:] == (2, 8, 8)
        assert env.y.dtype == torch.int64 and set(env.y.unique().tolist()) == {0, 1}
        # exactly one channel carries the digit: the other is all zeros
        zero_red = env.x[:, 0].flatten(1).abs().sum(1) == 0
        zero_green = env.x[:, 1].flatten(1).abs().sum(1) == 0
        assert torch.all(zero_red | zero_green)


def _colour(env):
    """1 for green (channel 1 carries the digit), 0 for red."""
    return (env.x[:, 1].flatten(1).sum(1) > 0).long()


def _binomial_ok(successes, n, p):
    return stats.binomtest(int(successes), n, p).pvalue > 1e-3


def test_colour_agrees_with_the_label_at_each_envs_rate():
    for env, agree in zip(colored_digit_environments(), (0.9, 0.8, 0.1)):
        same = int((_colour(env) == env.y).sum())
        assert _binomial_ok(same, len(env), agree), (env.name, same / len(env))


def test_label_is_digit_below_five_with_25_percent_noise(sk_digits):
    images, targets = sk_digits
    # recover each coloured image's digit from its grey image
    lookup = {}
    for image, target in zip(images / 16.0, targets):
        lookup.setdefault(np.asarray(image, dtype=np.float32).tobytes(), set()).add(int(target))
    clean = total = 0
    for env in colored_digit_environments():
        grey = env.x.sum(1).numpy().astype(np.float32)
        for image, y in zip(grey, env.y.tolist()):
            digits = lookup[image.tobytes()]
            assert len(digits) == 1
            clean += int((next(iter(digits)) < 5) == bool(y))
            total += 1
    assert total == N_DIGITS
    assert _binomial_ok(clean, total, 0.75)


def test_recipe_is_seeded():
    images, labels = digit_images()
    a = colored_environments(images, labels, seed=0)
    b = colored_environments(images, labels, seed=0)
    c = colored_environments(images, labels, seed=1)
    assert all(torch.equal(x.x, y.x) and torch.equal(x.y, y.y) for x, y in zip(a, b))
    assert not all(torch.equal(x.y, y.y) for x, y in zip(a, c))
    # the default environments are the seed-0 recipe
    assert torch.equal(a[0].y, colored_digit_environments()[0].y)


def test_rotated_digits_environments(sk_digits):
    envs = rotated_digit_environments()
    assert [e.name for e in envs] == ["0", "15", "30", "45", "60", "75"]
    assert sum(len(e) for e in envs) == N_DIGITS
    assert sorted(len(e) for e in envs) == [299, 299, 299, 300, 300, 300]
    for env in envs:
        assert env.x.shape[1:] == (1, 8, 8) and env.x.dtype == torch.float32
        assert set(env.y.unique().tolist()) == set(range(10))
        assert env.x.min() >= 0.0 and env.x.max() <= 1.0 + 1e-6
    # environment 0 is unrotated: each image is one of the originals, with its label
    originals = {
        (np.asarray(img / 16.0, dtype=np.float32).tobytes(), int(t)) for img, t in zip(*sk_digits)
    }
    for image, y in zip(envs[0].x[:, 0].numpy(), envs[0].y.tolist()):
        assert (image.tobytes(), y) in originals
    # the others are rotated: far from every original on average
    assert not torch.allclose(envs[3].x.mean(0), envs[0].x.mean(0), atol=1e-2)


def test_rotation_by_90_degrees_is_a_transpose_flip():
    from shiftbench.data.recipes import rotate_images

    images, _ = digit_images()
    rotated = rotate_images(images[:5], 90)[:, 0]
    # counter-clockwise by 90 degrees: torch.rot90 with k=1 on (H, W)
    torch.testing.assert_close(rotated, torch.rot90(images[:5], 1, dims=(1, 2)), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "name, n_envs, classes, channels", [("colored_digits", 3, 2, 2), ("rotated_digits", 6, 10, 1)]
)
def test_dataset_plugins_return_domain_data(name, n_envs, classes, channels):
    cls = registry.dataset_class(name)
    assert cls.name == name and len(cls.environments) == n_envs
    data = cls.get_instance().get_data()["data"]
    assert isinstance(data, DomainData)
    assert len(data.environments) == n_envs and data.num_classes == classes
    assert data.input_shape == (channels, 8, 8)
    assert data.test_env == cls.parameters["test_env"][0]
    assert data.env_names == list(cls.environments)
    with pytest.raises(ValueError, match="out of range"):
        cls.get_instance(test_env=n_envs).get_data()
