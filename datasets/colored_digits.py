"""ColoredDigits: DomainBed's ColoredMNIST recipe on scikit-learn's bundled 8x8 digits.

Binary label (digit < 5) with 25% label noise; the colour (red/green channel)
agrees with the noisy label except with probability 0.1, 0.2 and 0.9 in the
three environments, so colour is spuriously predictive except in the last.
"""

from benchopt import BaseDataset

from shiftbench.data.digits import colored_digit_environments, domain_data


class Dataset(BaseDataset):
    name = "colored_digits"
    parameters = {"test_env": [2], "holdout_fraction": [0.2], "split_seed": [0]}
    environments = ("+90%", "+80%", "-90%")

    def get_data(self) -> dict:
        envs = colored_digit_environments()
        return {
            "data": domain_data(
                self.name, envs, 2, self.test_env, self.holdout_fraction, self.split_seed
            )
        }
