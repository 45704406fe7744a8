"""CIFAR-10 pickle batches and CIFAR-10-C, released .npy files or computed on the fly."""

import pickle

import numpy as np
import pytest
import torch

from shiftbench.data.cifar import (
    CIFAR_C_FOLDER,
    CIFAR_FOLDER,
    cifar10_c_environments,
    class_names,
    corrupted_test_set,
    load_cifar10,
)
from shiftbench.data.corruptions import corrupt
from shiftbench.data.paths import MissingDataError

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_batch(path, images: np.ndarray, labels: np.ndarray) -> None:
    """A CIFAR python batch: rows of 3072 bytes (R plane, G plane, B plane) and a label list."""
    batch = {
        "batch_label": path.name,
        "data": images.reshape(len(images), -1),
        "labels": labels.tolist(),
        "filenames": [f"{i}.png" for i in range(len(images))],
    }
    path.write_bytes(pickle.dumps(batch))


def write_cifar(root, per_batch: int = 4, n_test: int = 6) -> dict[str, np.ndarray]:
    """Tiny CIFAR-10 (5 train batches, a test batch, batches.meta); returns the NCHW arrays."""
    folder = root / CIFAR_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (5 * per_batch, 3, 32, 32), dtype=np.uint8)
    train_y = rng.integers(0, 10, 5 * per_batch)
    test_x = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    test_y = rng.integers(0, 10, n_test)
    for i in range(5):
        block = slice(i * per_batch, (i + 1) * per_batch)
        write_batch(folder / f"data_batch_{i + 1}", train_x[block], train_y[block])
    write_batch(folder / "test_batch", test_x, test_y)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": NAMES}))
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def write_cifar_c(root, corruption: str, per_severity: int = 3) -> np.ndarray:
    """A released-format ``<corruption>.npy`` (severity s filled with 10 s) and ``labels.npy``."""
    folder = root / CIFAR_C_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    images = np.repeat(np.arange(1, 6, dtype=np.uint8) * 10, per_severity)
    np.save(
        folder / f"{corruption}.npy",
        np.broadcast_to(images[:, None, None, None], (5 * per_severity, 32, 32, 3)),
    )
    labels = np.tile(np.arange(per_severity), 5)
    np.save(folder / "labels.npy", labels)
    return labels


def test_pickle_batches_round_trip(tmp_path):
    arrays = write_cifar(tmp_path)
    x, y = load_cifar10(tmp_path, train=True)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    np.testing.assert_array_equal(x.numpy(), arrays["train_x"])
    np.testing.assert_array_equal(y.numpy(), arrays["train_y"])
    x, y = load_cifar10(tmp_path, train=False)
    np.testing.assert_array_equal(x.numpy(), arrays["test_x"])
    assert class_names(tmp_path) == NAMES


def test_row_layout_is_channel_planes(tmp_path):
    write_cifar(tmp_path)
    folder = tmp_path / CIFAR_FOLDER
    row = np.zeros((1, 3072), dtype=np.uint8)
    row[0, 1024 + 32 * 5 + 7] = 255  # green plane, row 5, column 7
    write_batch(folder / "test_batch", row, np.array([3]))
    x, _ = load_cifar10(tmp_path, train=False)
    assert x[0, 1, 5, 7] == 255 and int(x.sum()) == 255


def test_released_cifar_c_severity_blocks(tmp_path):
    write_cifar(tmp_path)
    labels = write_cifar_c(tmp_path, "fog", per_severity=3)
    for severity in range(1, 6):
        x, y = corrupted_test_set(tmp_path, "fog", severity)
        assert x.shape == (3, 3, 32, 32)
        torch.testing.assert_close(x, torch.full_like(x, 10 * severity / 255))
        assert y.tolist() == labels[:3].tolist()


def test_cifar_c_falls_back_to_on_the_fly_corruption(tmp_path):
    arrays = write_cifar(tmp_path)
    x, y = corrupted_test_set(tmp_path, "contrast", 4, seed=0)
    expected = corrupt(torch.from_numpy(arrays["test_x"]).float() / 255, "contrast", 4)
    torch.testing.assert_close(x, expected)
    assert y.tolist() == arrays["test_y"].tolist()


def test_environments_clean_then_each_shift(tmp_path):
    write_cifar(tmp_path)
    write_cifar_c(tmp_path, "gaussian_noise", per_severity=2)
    envs = cifar10_c_environments(tmp_path, ["gaussian_noise", "contrast"], [1, 5])
    assert [e.name for e in envs] == [
        "clean", "gaussian_noise-1", "gaussian_noise-5", "contrast-1", "contrast-5",
    ]  # fmt: skip
    assert [len(e) for e in envs] == [20, 2, 2, 6, 6]
    assert all(e.x.dtype == torch.float32 and e.input_shape == (3, 32, 32) for e in envs)


def test_missing_files_raise_clear_errors(tmp_path):
    with pytest.raises(MissingDataError, match=r"CIFAR-10: data not found at .*cifar-10-python"):
        load_cifar10(tmp_path)
    write_cifar(tmp_path)
    with pytest.raises(
        MissingDataError, match=r"CIFAR-10-C: data not found at .*fog\.npy.*zenodo"
    ):
        corrupted_test_set(tmp_path, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupted_test_set(tmp_path, "contrast", 0)
