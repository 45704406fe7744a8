"""DomainBed's image-folder data sets (PACS, VLCS, OfficeHome, TerraIncognita, DomainNet).

Layout, as DomainBed's ``download.py`` leaves it:
``<data_home>/<folder>/<environment>/<class>/<image>``; environments are the
sorted sub-folders (named by DomainBed's short names), classes the sorted
class folders. Images stay on disk: an environment's ``x`` is a
:class:`LazyImages` that decodes and transforms the indexed files, with
DomainBed's training augmentation or its evaluation transform (resize to
224, ImageNet normalization). The augmentation flag is switchable
(:func:`with_augmentation`) so evaluation always uses the evaluation transform.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from shiftbench.data.environments import DomainData, Environment
from shiftbench.data.paths import MissingDataError, data_home, require_files

IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DOMAINBED_SOURCE = "DomainBed: python -m domainbed.scripts.download --data_dir <data_home>"


@dataclass(frozen=True)
class FolderDataset:
    """One DomainBed image-folder data set: its folder and environment short names."""

    name: str
    folder: str
    environments: tuple[str, ...]


FOLDER_DATASETS = {
    spec.name: spec
    for spec in (
        FolderDataset("PACS", "PACS", ("A", "C", "P", "S")),
        FolderDataset("VLCS", "VLCS", ("C", "L", "S", "V")),
        FolderDataset("OfficeHome", "office_home", ("A", "C", "P", "R")),
        FolderDataset("TerraIncognita", "terra_incognita", ("L100", "L38", "L43", "L46")),
        FolderDataset(
            "DomainNet", "domain_net", ("clip", "info", "paint", "quick", "real", "sketch")
        ),
    )
}


@cache
def image_transform(
    augment: bool, size: int = IMAGE_SIZE
) -> Callable[[Image.Image], torch.Tensor]:
    """DomainBed's transforms: augmentation for training, plain resize for evaluation."""
    from torchvision import transforms  # imported when used: validating a study needs none

    normalize = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if not augment:
        return transforms.Compose([transforms.Resize((size, size)), *normalize])
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(size, scale=(0.7, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(0.3, 0.3, 0.3, 0.3),
            transforms.RandomGrayscale(),
            *normalize,
        ]
    )


class ImageSource(Protocol):
    """Where a lazy image table gets its images: anything with ``load(i) -> PIL image``."""

    def load(self, i: int) -> Image.Image: ...


@dataclass(frozen=True, eq=False)
class FileImages:
    """Images stored as files, one path per row."""

    paths: tuple[str, ...]

    def load(self, i: int) -> Image.Image:
        with Image.open(self.paths[i]) as image:
            return image.convert("RGB")


@dataclass(frozen=True, eq=False)
class LazyImages:
    """Rows of an image source, decoded and transformed to (3, size, size) floats on indexing.

    Implements the ``LazyInputs`` protocol; ``rows`` maps positions to source rows,
    so subsets share the source.
    """

    source: ImageSource
    rows: np.ndarray
    augment: bool = False
    size: int = IMAGE_SIZE
    device: str = "cpu"

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        transform = image_transform(self.augment, self.size)
        positions = torch.as_tensor(idx).reshape(-1).tolist()
        images = [transform(self.source.load(int(self.rows[p]))) for p in positions]
        return torch.stack(images).to(self.device)

    def subset(self, idx: np.ndarray) -> LazyImages:
        return replace(self, rows=self.rows[np.asarray(idx, dtype=np.int64)])

    def to(self, device: torch.device | str) -> LazyImages:
        return replace(self, device=str(device))

    def augmented(self, on: bool) -> LazyImages:
        """The same images with training augmentation switched on or off."""
        return replace(self, augment=on)


def with_augmentation(env: Environment, on: bool) -> Environment:
    """``env`` with augmentation switched on or off; tensor environments are returned as is."""
    if not isinstance(env.x, LazyImages):
        return env
    return Environment(env.name, env.x.augmented(on), env.y)


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, in sorted order (as ``ImageFolder``)."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def scan_environment(env_dir: Path, classes: Sequence[str]) -> tuple[list[str], list[int]]:
    """Every image of one environment folder with its class index in ``classes``."""
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = list_images(env_dir / name) if (env_dir / name).is_dir() else []
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    return paths, labels


def sub_folders(folder: Path) -> list[Path]:
    """Sorted sub-folders (DomainBed's environment and class order)."""
    return sorted(p for p in folder.iterdir() if p.is_dir())


def environment_folders(dataset: str, root: str | Path | None = None) -> list[Path]:
    """The data set's environment folders, or one :class:`MissingDataError` line naming the
    path and where to get the data (a cheap check: no image is opened)."""
    spec = FOLDER_DATASETS[dataset]
    folder = require_files(dataset, data_home(root), [spec.folder], DOMAINBED_SOURCE) / spec.folder
    env_dirs = sub_folders(folder)
    if len(env_dirs) != len(spec.environments):
        raise MissingDataError(
            f"{dataset}: expected {len(spec.environments)} environment folders at {folder}, "
            f"found {len(env_dirs)}; get it from {DOMAINBED_SOURCE}"
        )
    return env_dirs


def folder_environments(
    dataset: str, root: str | Path | None = None, augment: bool = False, size: int = IMAGE_SIZE
) -> tuple[list[Environment], int]:
    """All environments of a DomainBed folder data set, and the number of classes.

    Classes are the sorted union of class folders over environments, so a class
    missing from one environment keeps the same index everywhere.
    """
    spec = FOLDER_DATASETS[dataset]
    env_dirs = environment_folders(dataset, root)
    classes = sorted({c.name for env_dir in env_dirs for c in sub_folders(env_dir)})
    envs = []
    for short_name, env_dir in zip(spec.environments, env_dirs, strict=True):
        paths, labels = scan_environment(env_dir, classes)
        if not paths:
            raise MissingDataError(f"{dataset}: no images found at {env_dir}")
        source = FileImages(tuple(paths))
        x = LazyImages(source, np.arange(len(paths)), augment=augment, size=size)
        envs.append(Environment(short_name, x, torch.tensor(labels, dtype=torch.int64)))
    return envs, len(classes)


def folder_domain_data(
    dataset: str,
    root: str | Path | None,
    test_env: int,
    holdout_fraction: float = 0.2,
    split_seed: int = 0,
    augment: bool = True,
    size: int = IMAGE_SIZE,
    domainbed_split_seeds: bool = False,
    val_env: int = -1,
) -> DomainData:
    """A folder data set as ``DomainData``: augmentation (if asked) on all but ``test_env``."""
    envs, num_classes = folder_environments(dataset, root, size=size)
    envs = [with_augmentation(env, augment and i != test_env) for i, env in enumerate(envs)]
    return DomainData(
        dataset,
        envs,
        test_env,
        num_classes,
        holdout_fraction,
        split_seed,
        domainbed_split_seeds=domainbed_split_seeds,
        val_env=val_env,
    )
