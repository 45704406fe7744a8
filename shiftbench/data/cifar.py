"""CIFAR-10 from its python pickle batches, and CIFAR-10-C shifts of it.

Layout under the data home: ``cifar-10-batches-py/`` (``data_batch_1..5``,
``test_batch``, ``batches.meta``, as torchvision downloads it) and
``CIFAR-10-C/`` (``<corruption>.npy``: 5 severities x n test images, uint8
NHWC, severity 1 first; ``labels.npy`` alongside). The clean training set is
the training environment; each corruption x severity is a test environment,
read from the released ``.npy`` when present, else (for the corruptions
:mod:`shiftbench.data.corruptions` implements) computed from the clean test set.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from shiftbench.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from shiftbench.data.environments import Environment
from shiftbench.data.paths import MissingDataError, data_home, require_files

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_C_FOLDER = "CIFAR-10-C"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
CIFAR_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_C_SOURCE = "https://zenodo.org/records/2535967 (CIFAR-10-C.tar)"

CIFAR_C_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression", "speckle_noise", "gaussian_blur",
    "spatter", "saturate",
)  # fmt: skip


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch: uint8 images (n, 3, 32, 32) (rows are R, G, B planes) and labels."""
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    labels = batch["labels"] if "labels" in batch else batch["fine_labels"]
    images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(labels, dtype=np.int64)


def class_names(root: str | Path | None = None) -> list[str]:
    """CIFAR-10's class names from ``batches.meta``."""
    folder = require_files("CIFAR-10", data_home(root) / CIFAR_FOLDER, [META], CIFAR_SOURCE)
    with open(folder / META, "rb") as f:
        return list(pickle.load(f, encoding="latin1")["label_names"])


def load_cifar10(
    root: str | Path | None = None, train: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The train (50,000) or test (10,000) set: uint8 images (N, 3, 32, 32), int64 labels."""
    names = TRAIN_BATCHES if train else (TEST_BATCH,)
    folder = require_files("CIFAR-10", data_home(root) / CIFAR_FOLDER, names, CIFAR_SOURCE)
    batches = [read_batch(folder / name) for name in names]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return torch.from_numpy(images), torch.from_numpy(labels)


def released_corruption(
    folder: Path, corruption: str, severity: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One severity block of a released ``<corruption>.npy`` as uint8 NCHW, with its labels."""
    images = np.load(folder / f"{corruption}.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy", mmap_mode="r")
    if len(images) % len(SEVERITIES) or len(labels) != len(images):
        raise ValueError(
            f"CIFAR-10-C: {folder / corruption}.npy has {len(images)} images and "
            f"{len(labels)} labels; expected equal counts, a multiple of 5"
        )
    n = len(images) // len(SEVERITIES)
    block = slice((severity - 1) * n, severity * n)
    x = torch.from_numpy(np.array(images[block])).permute(0, 3, 1, 2)
    return x.contiguous(), torch.from_numpy(np.array(labels[block], dtype=np.int64))


def check_cifar10_c(root: str | Path | None, corruptions: Sequence[str]) -> None:
    """Raise one :class:`MissingDataError` line unless CIFAR-10 and, for each corruption, its
    released ``.npy`` or an on-the-fly version are available (no image is read)."""
    require_files(
        "CIFAR-10", data_home(root) / CIFAR_FOLDER, (*TRAIN_BATCHES, TEST_BATCH), CIFAR_SOURCE
    )
    for corruption in corruptions:
        _released_folder(root, corruption)


def _released_folder(root: str | Path | None, corruption: str) -> Path | None:
    """The CIFAR-10-C folder if it holds ``corruption``'s released files, None if the
    corruption is computed on the fly, else one :class:`MissingDataError` line."""
    folder = data_home(root) / CIFAR_C_FOLDER
    if (folder / f"{corruption}.npy").is_file() and (folder / "labels.npy").is_file():
        return folder
    if corruption not in CORRUPTIONS:
        raise MissingDataError(
            f"CIFAR-10-C: data not found at {folder / corruption}.npy and {corruption!r} has no "
            f"on-the-fly version ({', '.join(CORRUPTIONS)}); get it from {CIFAR_C_SOURCE}"
        )
    return None


def corrupted_test_set(
    root: str | Path | None, corruption: str, severity: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10-C test images as float (N, 3, 32, 32) in [0, 1], released or computed."""
    if severity not in SEVERITIES:
        raise ValueError(f"CIFAR-10-C: severity must be in 1..5, got {severity!r}")
    folder = _released_folder(root, corruption)
    if folder is not None:
        x, y = released_corruption(folder, corruption, severity)
        return x.float() / 255.0, y
    images, labels = load_cifar10(root, train=False)
    return corrupt(images.float() / 255.0, corruption, severity, seed), labels


def cifar10_c_environments(
    root: str | Path | None = None,
    corruptions: Sequence[str] = ("gaussian_noise",),
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
) -> list[Environment]:
    """``clean`` (the 50,000 training images) then one ``<corruption>-<severity>`` per pair."""
    images, labels = load_cifar10(root, train=True)
    envs = [Environment("clean", images.float() / 255.0, labels)]
    for corruption in corruptions:
        for severity in severities:
            x, y = corrupted_test_set(root, corruption, severity, seed)
            envs.append(Environment(f"{corruption}-{severity}", x, y))
    return envs
