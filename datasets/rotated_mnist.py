"""RotatedMNIST (Ghifary et al. 2015) with DomainBed's recipe on MNIST's 70,000 digits.

The digits are shuffled and split into six environments rotated by 0, 15,
30, 45, 60 and 75 degrees; ten classes. Needs MNIST's IDX files under
``<data_home>/MNIST/raw``.
"""

from benchopt import BaseDataset

from shiftbench.data.environments import DomainData
from shiftbench.data.mnist import check_mnist, rotated_mnist


class Dataset(BaseDataset):
    name = "rotated_mnist"
    parameters = {
        "test_env": [0],
        "holdout_fraction": [0.2],
        "split_seed": [0],
        "data_home": [None],
    }
    environments = ("0", "15", "30", "45", "60", "75")

    def check_data(self) -> None:
        """Raise one line naming the missing path (run before any trial starts)."""
        check_mnist(self.data_home)

    def get_data(self) -> dict:
        envs = list(rotated_mnist(self.data_home))
        return {
            "data": DomainData(
                self.name, envs, self.test_env, 10, self.holdout_fraction, self.split_seed
            )
        }
