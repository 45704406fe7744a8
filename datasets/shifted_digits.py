"""ShiftedDigits: train on clean digits, test under each of several shifts at once.

Environment 0 holds 60% of the bundled 8x8 digits (grey, as RGB) and is the only
training environment; every other environment is the remaining 40% under one shift
(``rotate-<degrees>``, ``color``, or a CIFAR-10-C corruption ``<name>-<severity>``).
The objective records the accuracy on each (``env<i>_acc``): the measures study's
OOD targets. Of the clean environment, ``holdout_fraction`` is the IID test set (``id_acc``,
the target ``gap_iid``), a disjoint ``measure_fraction`` the examples the ``*_heldout``
measures use, and the rest the training set.
"""

from benchopt import BaseDataset

from shiftbench.data.digits import domain_data, parse_shifts, shifted_digit_environments

DEFAULT_SHIFTS = "rotate-30,color,gaussian_noise-3,gaussian_blur-3,contrast-3"


class Dataset(BaseDataset):
    name = "shifted_digits"
    parameters = {
        "shifts": [DEFAULT_SHIFTS],
        "test_env": [1],
        "holdout_fraction": [0.2],
        "measure_fraction": [0.2],
        "split_seed": [0],
    }

    def get_data(self) -> dict:
        n_envs = 1 + len(parse_shifts(self.shifts))
        if not 1 <= self.test_env < n_envs:
            raise ValueError(f"test_env must be a shifted environment, 1..{n_envs - 1}")
        envs = shifted_digit_environments(self.shifts)
        data = domain_data(
            self.name,
            envs,
            10,
            self.test_env,
            self.holdout_fraction,
            self.split_seed,
            train_envs=(0,),
            measure_fraction=self.measure_fraction,
        )
        return {"data": data}
