"""Any Hugging Face image data set with a domain column, one environment per domain value.

The data set is opened with ``datasets.load_dataset``: a local folder (parquet
files, or an ``imagefolder`` with a ``metadata.csv`` holding the domain
column), a packaged builder with ``data_files``, or a Hub name already in the
local cache (works offline with ``HF_DATASETS_OFFLINE=1``). Images stay in
the Arrow table and are decoded on indexing through :class:`LazyImages`, with
the same transforms as the DomainBed image folders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from shiftbench.data.environments import DomainData, Environment
from shiftbench.data.image_folder import IMAGE_SIZE, LazyImages, with_augmentation
from shiftbench.data.paths import MissingDataError, data_home

HF_SOURCE = "the Hugging Face Hub (datasets.load_dataset(name) once online) or local parquet files"


@dataclass(frozen=True, eq=False)
class HFImages:
    """The image column of a Hugging Face ``Dataset``, decoded to RGB PIL images by row."""

    dataset: Any
    column: str

    def load(self, i: int) -> Image.Image:
        image = self.dataset[i][self.column]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        return image.convert("RGB")


def check_local(path: str, root: str | Path | None) -> None:
    """One :class:`MissingDataError` line if ``path`` is neither a folder under the data home
    nor a Hub name (``owner/name``, which only :func:`open_dataset` can look up in the
    cache); cheap, nothing is loaded."""
    local = data_home(root) / path
    if not local.exists() and "/" not in path:
        raise MissingDataError(
            f"hf_domains: data not found at {local}; get it from {HF_SOURCE}, or name a Hub "
            "data set (owner/name) in the local cache"
        )


def open_dataset(path: str, root: str | Path | None, split: str, **load_kwargs: Any) -> Any:
    """``load_dataset`` on ``<data_home>/<path>`` if that exists, else on ``path`` itself.

    A data set that cannot be found (locally or in the offline cache) raises
    one clear :class:`MissingDataError` line.
    """
    import datasets

    local = data_home(root) / path
    target = str(local) if local.exists() else path
    try:
        return datasets.load_dataset(target, split=split, **load_kwargs)
    except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as err:
        raise MissingDataError(
            f"hf_domains: data not found at {local} (nor {path!r} in the Hugging Face cache): "
            f"{err}; get it from {HF_SOURCE}"
        ) from err


def column_codes(dataset: Any, column: str) -> tuple[np.ndarray, list[str]]:
    """A column as integer codes and the name of each code (``ClassLabel`` names if any)."""
    feature = dataset.features[column]
    values = list(dataset[column])
    if hasattr(feature, "names"):
        return np.asarray(values, dtype=np.int64), list(feature.names)
    names = sorted({str(v) for v in values})
    lookup = {name: code for code, name in enumerate(names)}
    return np.asarray([lookup[str(v)] for v in values], dtype=np.int64), names


def hf_environments(
    path: str,
    domain_column: str = "domain",
    label_column: str = "label",
    image_column: str = "image",
    root: str | Path | None = None,
    split: str = "train",
    domains: Sequence[str] | None = None,
    size: int = IMAGE_SIZE,
    **load_kwargs: Any,
) -> tuple[list[Environment], int]:
    """One lazy environment per domain value (sorted, or in the order of ``domains``).

    Returns the environments and the number of classes (from a ``ClassLabel``
    label column, else the number of distinct labels).
    """
    dataset = open_dataset(path, root, split, **load_kwargs)
    for column in (domain_column, label_column, image_column):
        if column not in dataset.column_names:
            raise KeyError(f"hf_domains: no column {column!r} in {path}; "
                           f"columns are {', '.join(dataset.column_names)}")  # fmt: skip
    domain_codes, domain_names = column_codes(dataset, domain_column)
    labels, class_names = column_codes(dataset, label_column)
    source = HFImages(dataset.select_columns([image_column]), image_column)
    order = list(domains) if domains is not None else domain_names
    envs = []
    for name in order:
        if name not in domain_names:
            raise KeyError(f"hf_domains: no domain {name!r} in {path}; domains are {domain_names}")
        rows = np.flatnonzero(domain_codes == domain_names.index(name))
        x = LazyImages(source, rows, size=size)
        envs.append(Environment(str(name), x, torch.from_numpy(labels[rows])))
    return envs, len(class_names)


def hf_domain_data(
    path: str,
    test_env: int,
    domain_column: str = "domain",
    label_column: str = "label",
    image_column: str = "image",
    root: str | Path | None = None,
    split: str = "train",
    holdout_fraction: float = 0.2,
    split_seed: int = 0,
    augment: bool = False,
    size: int = IMAGE_SIZE,
    **load_kwargs: Any,
) -> DomainData:
    """A Hugging Face domain data set as ``DomainData``, training envs augmented if asked."""
    envs, num_classes = hf_environments(
        path, domain_column, label_column, image_column, root, split, size=size, **load_kwargs
    )
    envs = [with_augmentation(env, augment and i != test_env) for i, env in enumerate(envs)]
    return DomainData(path, envs, test_env, num_classes, holdout_fraction, split_seed)
