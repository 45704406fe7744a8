"""ColoredMNIST (Arjovsky et al. 2019) with DomainBed's recipe on MNIST's 70,000 digits.

Binary label (digit < 5) with 25% label noise; the colour (red/green channel)
agrees with the noisy label except with probability 0.1, 0.2 and 0.9 in the
three environments. Needs MNIST's IDX files under ``<data_home>/MNIST/raw``.
"""

from benchopt import BaseDataset

from shiftbench.data.environments import DomainData
from shiftbench.data.mnist import check_mnist, colored_mnist


class Dataset(BaseDataset):
    name = "colored_mnist"
    parameters = {
        "test_env": [2],
        "holdout_fraction": [0.2],
        "split_seed": [0],
        "data_home": [None],
    }
    environments = ("+90%", "+80%", "-90%")

    def check_data(self) -> None:
        """Raise one line naming the missing path (run before any trial starts)."""
        check_mnist(self.data_home)

    def get_data(self) -> dict:
        envs = list(colored_mnist(self.data_home))
        return {
            "data": DomainData(
                self.name, envs, self.test_env, 2, self.holdout_fraction, self.split_seed
            )
        }
