"""The data-set plugins: cheap defaults, a clear error in get_data when files are missing,
and DomainData with the declared environments when they are present."""

from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest
from test_data_cifar import write_cifar, write_cifar_c
from test_data_hf_images import write_parquet
from test_data_image_folder import write_folder_dataset
from test_data_mnist import write_mnist

from shiftbench.data.environments import DomainData
from shiftbench.data.image_folder import FOLDER_DATASETS
from shiftbench.data.paths import MissingDataError
from shiftbench.plugins.files import load_module

DATASETS_DIR = Path(__file__).resolve().parents[1] / "datasets"
FOLDER_PLUGINS = {
    "pacs": "PACS",
    "vlcs": "VLCS",
    "office_home": "OfficeHome",
    "terra_incognita": "TerraIncognita",
    "domain_net": "DomainNet",
}
PLUGINS = ["colored_mnist", "rotated_mnist", "cifar10_c", "hf_domains", *FOLDER_PLUGINS]


def make(plugin: str, data_home: Path, **params):
    """A plugin's Dataset instance with its default parameters, as Benchopt builds it."""
    cls = load_module(DATASETS_DIR / f"{plugin}.py").Dataset
    return cls.get_instance(data_home=str(data_home), **params)


@pytest.fixture(autouse=True)
def offline_hf(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_defaults_are_single_values_with_the_common_keys(plugin):
    cls = load_module(DATASETS_DIR / f"{plugin}.py").Dataset
    assert cls.name == plugin
    assert all(len(values) == 1 for values in cls.parameters.values())
    assert cls.parameters["holdout_fraction"] == [0.2] and cls.parameters["data_home"] == [None]
    if cls.environments:
        assert 0 <= cls.parameters["test_env"][0] < len(cls.environments)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_missing_files_fail_in_get_data_with_one_line(tmp_path, plugin):
    dataset = make(plugin, tmp_path / "empty")
    with pytest.raises(MissingDataError) as info:
        dataset.get_data()
    assert "\n" not in str(info.value) and str(tmp_path / "empty") in str(info.value)


def test_mnist_plugins(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw")
    for plugin, classes in (("colored_mnist", 2), ("rotated_mnist", 10)):
        dataset = make(plugin, tmp_path)
        data = dataset.get_data()["data"]
        assert isinstance(data, DomainData) and data.num_classes == classes
        assert tuple(data.env_names) == dataset.environments


@pytest.mark.parametrize("plugin", sorted(FOLDER_PLUGINS))
def test_folder_plugins(tmp_path, plugin):
    spec = FOLDER_DATASETS[FOLDER_PLUGINS[plugin]]
    write_folder_dataset(tmp_path, spec.folder, [f"e{i}" for i in range(len(spec.environments))])
    dataset = make(plugin, tmp_path)
    data = dataset.get_data()["data"]
    assert tuple(data.env_names) == dataset.environments
    assert data.input_shape == (3, 224, 224) and data.num_classes == 2


def test_cifar10_c_plugin(tmp_path):
    write_cifar(tmp_path)
    write_cifar_c(tmp_path, "fog", per_severity=2)
    data = make("cifar10_c", tmp_path, corruption="fog", severity=2).get_data()["data"]
    assert data.env_names == ["clean", "fog-2"] and data.test_env == 1
    assert [len(e) for e in data.environments] == [20, 2]


def test_hf_domains_plugin(tmp_path):
    write_parquet(tmp_path / "hf_domains")
    data = make("hf_domains", tmp_path, image_size=8, test_env=2).get_data()["data"]
    assert data.env_names == ["art", "photo", "sketch"] and data.num_classes == 3
    assert data.input_shape == (3, 8, 8)
