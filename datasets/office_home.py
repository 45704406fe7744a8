"""OfficeHome (Venkateswara et al. 2017): art, clipart, product, real world;
65 classes.

DomainBed's image-folder layout under ``<data_home>/``; images are loaded lazily,
with DomainBed's augmentation on the training environments when ``augment``.
"""

from benchopt import BaseDataset

from shiftbench.data.image_folder import folder_domain_data


class Dataset(BaseDataset):
    name = "office_home"
    parameters = {
        "test_env": [0],
        "holdout_fraction": [0.2],
        "split_seed": [0],
        "augment": [True],
        "data_home": [None],
    }
    environments = ("A", "C", "P", "R")

    def get_data(self) -> dict:
        data = folder_domain_data(
            "OfficeHome",
            self.data_home,
            test_env=self.test_env,
            holdout_fraction=self.holdout_fraction,
            split_seed=self.split_seed,
            augment=self.augment,
        )
        return {"data": data}
