"""DomainBed image folders: layout, labels, lazy loading, and the switchable augmentation."""

import numpy as np
import pytest
import torch
from PIL import Image

from shiftbench.data.environments import Environment
from shiftbench.data.image_folder import (
    FOLDER_DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LazyImages,
    folder_domain_data,
    folder_environments,
    with_augmentation,
)
from shiftbench.data.paths import MissingDataError

PACS_FOLDERS = ("art_painting", "cartoon", "photo", "sketch")


def write_folder_dataset(root, folder: str, env_folders, classes=("dog", "horse"), per_class=2):
    """``root/folder/<env>/<class>/<i>.jpg|png``: solid colours, varied sizes, RGB and grey."""
    for e, env in enumerate(env_folders):
        for c, name in enumerate(classes):
            target = root / folder / env / name
            target.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                colour = (40 * e, 100 + 50 * c, 20 * i)
                if i % 2:
                    Image.new("L", (30 + i, 20), 90).save(target / f"{i}.png")
                else:
                    Image.new("RGB", (40, 24 + i), colour).save(target / f"{i}.jpg", quality=95)


def test_pacs_environments_and_labels(tmp_path):
    write_folder_dataset(tmp_path, "PACS", PACS_FOLDERS, per_class=3)
    envs, num_classes = folder_environments("PACS", tmp_path)
    assert [e.name for e in envs] == ["A", "C", "P", "S"] and num_classes == 2
    assert all(len(e) == 6 and e.y.tolist() == [0, 0, 0, 1, 1, 1] for e in envs)
    assert envs[0].input_shape == (3, 224, 224)


def test_eval_transform_is_resize_and_imagenet_normalization(tmp_path):
    write_folder_dataset(tmp_path, "PACS", PACS_FOLDERS)
    envs, _ = folder_environments("PACS", tmp_path)
    batch = envs[2].x[torch.tensor([2, 1])]  # photo / horse: RGB jpg, then a grey png
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == torch.float32
    mean, std = (
        torch.tensor(IMAGENET_MEAN)[:, None, None],
        torch.tensor(IMAGENET_STD)[:, None, None],
    )
    rgb = torch.tensor([80.0, 150.0, 0.0])[:, None, None] / 255  # solid colour of that image
    torch.testing.assert_close(
        batch[0], ((rgb - mean) / std).expand(3, 224, 224), atol=0.05, rtol=0
    )
    grey = torch.full((3, 1, 1), 90 / 255)
    torch.testing.assert_close(
        batch[1], ((grey - mean) / std).expand(3, 224, 224), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(envs[2].x[torch.tensor([2])], batch[:1])  # deterministic


def test_augmentation_switches_on_and_off(tmp_path):
    write_folder_dataset(tmp_path, "PACS", PACS_FOLDERS)
    data = folder_domain_data("PACS", tmp_path, test_env=3, augment=True)
    assert [e.x.augment for e in data.environments] == [True, True, True, False]
    plain = with_augmentation(data.environments[0], False)
    assert isinstance(plain.x, LazyImages) and not plain.x.augment
    idx = torch.arange(4)
    torch.manual_seed(0)
    first = data.environments[0].x[idx]
    second = data.environments[0].x[idx]
    assert first.shape == second.shape == (4, 3, 224, 224)
    assert not torch.equal(first, second)  # random crop / flip / jitter
    torch.testing.assert_close(plain.x[idx], plain.x[idx])
    tensor_env = Environment("t", torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))
    assert with_augmentation(tensor_env, True) is tensor_env


def test_lazy_subset_and_device(tmp_path):
    write_folder_dataset(tmp_path, "PACS", PACS_FOLDERS)
    env = folder_environments("PACS", tmp_path, size=32)[0][1]
    part = env.subset(np.array([3, 0]))
    assert part.y.tolist() == [1, 0] and part.input_shape == (3, 32, 32)
    torch.testing.assert_close(part.x[torch.tensor([0])], env.x[torch.tensor([3])])
    moved = env.to("cpu")
    assert moved.x.device == "cpu" and moved.x[torch.tensor([0])].device.type == "cpu"
    in_split, out_split = folder_domain_data("PACS", tmp_path, test_env=0).splits()[1]
    assert len(in_split) + len(out_split) == len(env)


def test_class_missing_in_one_environment_keeps_indices(tmp_path):
    write_folder_dataset(tmp_path, "VLCS", ["Caltech101", "LabelMe", "SUN09"], ("bird", "car"))
    write_folder_dataset(tmp_path, "VLCS", ["VOC2007"], ("car",))
    envs, num_classes = folder_environments("VLCS", tmp_path)
    assert num_classes == 2 and envs[3].y.tolist() == [1, 1]


@pytest.mark.parametrize("dataset", sorted(FOLDER_DATASETS))
def test_every_dataset_reads_its_domainbed_folder(tmp_path, dataset):
    spec = FOLDER_DATASETS[dataset]
    write_folder_dataset(tmp_path, spec.folder, [f"env{i}" for i in range(len(spec.environments))])
    envs, _ = folder_environments(dataset, tmp_path, size=16)
    assert tuple(e.name for e in envs) == spec.environments


def test_missing_or_incomplete_data_is_a_clear_error(tmp_path):
    with pytest.raises(MissingDataError, match=r"PACS: data not found at .*PACS.*DomainBed"):
        folder_environments("PACS", tmp_path)
    write_folder_dataset(tmp_path, "PACS", PACS_FOLDERS[:2])
    with pytest.raises(MissingDataError, match="expected 4 environment folders"):
        folder_environments("PACS", tmp_path)


def test_take_loads_lazy_images_by_index(tmp_path):
    """``Environment.take`` on lazy inputs is their own indexing: the images at ``idx``."""
    write_folder_dataset(tmp_path, "PACS", PACS_FOLDERS)
    env = folder_environments("PACS", tmp_path)[0][2]
    idx = torch.tensor([3, 0, 3])
    x, y = env.take(idx)
    torch.testing.assert_close(x, env.x[idx], rtol=0, atol=0)
    assert y.tolist() == [1, 0, 1]
