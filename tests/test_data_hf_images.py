"""Hugging Face image data sets with a domain column, from local parquet and imagefolder files."""

import datasets
import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image

from shiftbench.data.hf_images import hf_domain_data, hf_environments
from shiftbench.data.paths import MissingDataError


@pytest.fixture(autouse=True)
def offline_cache(tmp_path, monkeypatch):
    """No network, and the Arrow cache inside the test's folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def write_parquet(folder, domains=("sketch", "photo", "sketch", "art", "photo", "photo")):
    """A parquet image data set: solid grey images (value 10 * row), ClassLabel labels."""
    features = datasets.Features(
        image=datasets.Image(),
        label=datasets.ClassLabel(names=["cat", "dog", "fox"]),
        domain=datasets.Value("string"),
    )
    rows = {
        "image": [Image.new("RGB", (12, 10), (10 * i,) * 3) for i in range(len(domains))],
        "label": [i % 3 for i in range(len(domains))],
        "domain": list(domains),
    }
    folder.mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(folder / "train.parquet")


def test_parquet_one_environment_per_domain(tmp_path):
    write_parquet(tmp_path / "toy")
    envs, num_classes = hf_environments("toy", root=tmp_path, size=8)
    assert [e.name for e in envs] == ["art", "photo", "sketch"] and num_classes == 3
    assert [e.y.tolist() for e in envs] == [[0], [1, 1, 2], [0, 2]]
    photo = envs[1].x[torch.tensor([0, 2])]  # rows 1 and 5
    assert photo.shape == (2, 3, 8, 8)
    std, mean = 0.224, 0.456  # green channel: a grey pixel v becomes (v - mean) / std
    np.testing.assert_allclose(
        photo[:, 1, 0, 0], [(10 / 255 - mean) / std, (50 / 255 - mean) / std], atol=1e-5
    )


def test_domain_order_and_domain_data(tmp_path):
    write_parquet(tmp_path / "toy")
    envs, _ = hf_environments("toy", root=tmp_path, domains=["sketch", "art"], size=8)
    assert [e.name for e in envs] == ["sketch", "art"]
    data = hf_domain_data("toy", test_env=0, root=tmp_path, augment=True, size=8)
    assert [e.x.augment for e in data.environments] == [False, True, True]


def test_imagefolder_with_metadata(tmp_path):
    folder = tmp_path / "folder" / "train"
    folder.mkdir(parents=True)
    lines = ["file_name,domain,label"]
    for i, (domain, label) in enumerate([("day", 0), ("night", 1), ("day", 1), ("night", 0)]):
        Image.new("L", (9, 9), 20 * i).save(folder / f"{i}.png")
        lines.append(f"{i}.png,{domain},{label}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    envs, num_classes = hf_environments("folder", root=tmp_path, size=9)
    assert [e.name for e in envs] == ["day", "night"] and num_classes == 2
    assert [e.y.tolist() for e in envs] == [[0, 1], [1, 0]]
    assert envs[1].x[torch.tensor([1])].shape == (1, 3, 9, 9)


def test_missing_data_and_bad_columns(tmp_path):
    with pytest.raises(MissingDataError, match=r"hf_domains: data not found at .*nothing"):
        hf_environments("nothing", root=tmp_path)
    write_parquet(tmp_path / "toy")
    with pytest.raises(KeyError, match="no column 'region'"):
        hf_environments("toy", domain_column="region", root=tmp_path)
    with pytest.raises(KeyError, match="no domain 'clipart'"):
        hf_environments("toy", root=tmp_path, domains=["clipart"])
