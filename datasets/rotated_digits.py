"""RotatedDigits: DomainBed's RotatedMNIST recipe on scikit-learn's bundled 8x8 digits.

The digits are shuffled and split into six environments rotated by 0, 15,
30, 45, 60 and 75 degrees; ten classes.
"""

from benchopt import BaseDataset

from shiftbench.data.digits import domain_data, rotated_digit_environments


class Dataset(BaseDataset):
    name = "rotated_digits"
    parameters = {"test_env": [0], "holdout_fraction": [0.2], "split_seed": [0]}
    environments = ("0", "15", "30", "45", "60", "75")

    def get_data(self) -> dict:
        envs = rotated_digit_environments()
        return {
            "data": domain_data(
                self.name, envs, 10, self.test_env, self.holdout_fraction, self.split_seed
            )
        }
