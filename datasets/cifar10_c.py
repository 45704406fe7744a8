"""CIFAR-10-C (Hendrycks & Dietterich 2019): train on clean CIFAR-10, test on one corruption.

Environment 0 is the clean training set; environment 1 is the CIFAR-10 test
set under ``corruption`` at ``severity`` (1-5), read from the released
``CIFAR-10-C/<corruption>.npy`` when present, else computed on the fly.
"""

from benchopt import BaseDataset

from shiftbench.data.cifar import cifar10_c_environments
from shiftbench.data.environments import DomainData


class Dataset(BaseDataset):
    name = "cifar10_c"
    parameters = {
        "corruption": ["gaussian_noise"],
        "severity": [5],
        "test_env": [1],
        "holdout_fraction": [0.2],
        "split_seed": [0],
        "data_home": [None],
    }
    environments = ("clean", "corrupted")

    def get_data(self) -> dict:
        envs = cifar10_c_environments(self.data_home, [self.corruption], [self.severity])
        return {
            "data": DomainData(
                self.name, envs, self.test_env, 10, self.holdout_fraction, self.split_seed
            )
        }
