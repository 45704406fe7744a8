"""The Benchopt dataset base of DomainBed's image-folder data sets (PACS, VLCS, ...).

A plugin names its folder data set (a key of ``FOLDER_DATASETS``); parameters,
environment names and loading are shared here, once.
"""

from __future__ import annotations

from typing import ClassVar

from benchopt import BaseDataset

from shiftbench.data.image_folder import (
    FOLDER_DATASETS,
    environment_folders,
    folder_domain_data,
)


class FolderDataset(BaseDataset):
    """Images loaded lazily from ``<data_home>/<folder>/<env>/<class>/``, with DomainBed's
    augmentation on the training environments when ``augment``. The in/out split follows the
    trial seed as in DomainBed unless ``fixed_data`` (:mod:`shiftbench.data.seeds`);
    ``val_env >= 0`` makes the run a leave-one-domain-out companion."""

    dataset: ClassVar[str]
    parameters: ClassVar[dict] = {
        "test_env": [0],
        "val_env": [-1],
        "holdout_fraction": [0.2],
        "fixed_data": [False],
        "split_seed": [None],
        "augment": [True],
        "data_home": [None],
    }

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.environments = FOLDER_DATASETS[cls.dataset].environments

    def check_data(self) -> None:
        """Raise one line naming the missing path (run before any trial starts)."""
        environment_folders(self.dataset, self.data_home)

    def get_data(self) -> dict:
        data = folder_domain_data(
            self.dataset,
            self.data_home,
            test_env=self.test_env,
            holdout_fraction=self.holdout_fraction,
            split_seed=self.split_seed or 0,
            augment=self.augment,
            domainbed_split_seeds=True,
            val_env=self.val_env,
        )
        return {"data": data}
