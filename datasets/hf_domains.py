"""Any Hugging Face image data set with a domain column: one environment per domain value.

``path`` is a folder under the data home (parquet files, or an imagefolder
with a ``metadata.csv`` holding the domain column) or a Hub name in the
local cache; environments are the sorted domain values.
"""

from benchopt import BaseDataset

from shiftbench.data.hf_images import check_local, hf_domain_data


class Dataset(BaseDataset):
    name = "hf_domains"
    parameters = {
        "path": ["hf_domains"],
        "domain_column": ["domain"],
        "label_column": ["label"],
        "image_column": ["image"],
        "split": ["train"],
        "image_size": [224],
        "augment": [False],
        "test_env": [0],
        "holdout_fraction": [0.2],
        "split_seed": [0],
        "data_home": [None],
    }
    environments = ()

    def check_data(self) -> None:
        """Raise one line naming the missing path (run before any trial starts)."""
        check_local(self.path, self.data_home)

    def get_data(self) -> dict:
        data = hf_domain_data(
            self.path,
            test_env=self.test_env,
            domain_column=self.domain_column,
            label_column=self.label_column,
            image_column=self.image_column,
            root=self.data_home,
            split=self.split,
            holdout_fraction=self.holdout_fraction,
            split_seed=self.split_seed,
            augment=self.augment,
            size=self.image_size,
        )
        return {"data": data}
