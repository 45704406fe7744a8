"""MNIST IDX reading (raw and gzip'd) and ColoredMNIST / RotatedMNIST built from it."""

import gzip
import struct

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from shiftbench.data.mnist import (
    IDX_FILES,
    colored_mnist,
    load_mnist,
    read_idx,
    rotated_mnist,
)
from shiftbench.data.paths import MissingDataError


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0 0 8 ndim, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train: int = 30, n_test: int = 12, compress: bool = True):
    """Tiny MNIST in torchvision's layout; returns (train images, labels, test images, labels)."""
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.uint8),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(IDX_FILES, arrays):
        if compress:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(idx_bytes(array))
        else:
            (folder / name).write_bytes(idx_bytes(array))
    return arrays


@pytest.mark.parametrize("shape", [(5, 28, 28), (7,)])
def test_read_idx_matches_torchvision(tmp_path, shape):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    (tmp_path / "raw").write_bytes(idx_bytes(array))
    with gzip.open(tmp_path / "raw.gz", "wb") as f:
        f.write(idx_bytes(array))
    expected = read_sn3_pascalvincent_tensor(str(tmp_path / "raw")).numpy()
    np.testing.assert_array_equal(read_idx(tmp_path / "raw"), expected)
    np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), array)


def test_read_idx_big_endian_int32(tmp_path):
    values = np.array([1, -2, 70000], dtype=">i4")
    (tmp_path / "ints").write_bytes(
        bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 3) + values.tobytes()
    )
    assert read_idx(tmp_path / "ints").tolist() == [1, -2, 70000]


def test_read_idx_rejects_other_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x89PNG....")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_combines_train_and_test(tmp_path, compress):
    tr_x, tr_y, te_x, te_y = write_mnist(tmp_path / "MNIST" / "raw", compress=compress)
    images, labels = load_mnist(tmp_path)
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    np.testing.assert_array_equal(images.numpy(), np.concatenate([tr_x, te_x]))
    np.testing.assert_array_equal(labels.numpy(), np.concatenate([tr_y, te_y]))


def test_colored_and_rotated_mnist(tmp_path):
    write_mnist(tmp_path / "MNIST", n_train=30, n_test=12)
    colored = colored_mnist(tmp_path)
    assert [e.name for e in colored] == ["+90%", "+80%", "-90%"]
    assert [len(e) for e in colored] == [14, 14, 14]
    assert colored[0].input_shape == (2, 28, 28) and set(colored[0].y.tolist()) <= {0, 1}
    rotated = rotated_mnist(tmp_path)
    assert [len(e) for e in rotated] == [7] * 6
    assert rotated[0].input_shape == (1, 28, 28)
    assert rotated[3].x.min() >= 0.0 and rotated[3].x.max() <= 1.0


def test_missing_mnist_names_path_and_source(tmp_path):
    with pytest.raises(MissingDataError, match=r"MNIST: data not found at .*torchvision"):
        load_mnist(tmp_path / "nowhere")
