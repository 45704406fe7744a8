"""The Benchopt dataset base of the DomainBed recipe data sets (ColoredMNIST, RotatedMNIST, and
their 8x8-digits versions).

Parameters, DomainBed's seeds (:mod:`shiftbench.data.seeds`) and the ``DomainData`` they
return are shared here, once; a plugin names its recipe's environments for a data seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from benchopt import BaseDataset

from shiftbench.data.environments import DomainData, Environment
from shiftbench.data.mnist import SOURCES


class RecipeDataset(BaseDataset):
    """A DomainBed recipe applied to grey images, redrawn per trial unless ``fixed_data``.

    ``data_seed`` and ``split_seed`` are filled in by the study expansion
    (:func:`shiftbench.data.seeds.resolve`); ``None`` (a plain ``benchopt run``) means 0.
    ``val_env >= 0`` makes the run a leave-one-domain-out companion
    (:mod:`shiftbench.studies.optimizer_ood.selection`).
    """

    domainbed_name: ClassVar[str]
    num_classes: ClassVar[int]
    parameters: ClassVar[dict] = {
        "test_env": [0],
        "val_env": [-1],
        "holdout_fraction": [0.2],
        "fixed_data": [False],
        "data_seed": [None],
        "split_seed": [None],
    }

    @staticmethod
    def check_parameters(params: dict) -> None:
        """Reject an unknown MNIST ``source`` before any trial runs."""
        if "source" in params and params["source"] not in SOURCES:
            raise ValueError(
                f"source must be one of {', '.join(SOURCES)}, got {params['source']!r}"
            )

    def recipe_environments(self, seed: int) -> Sequence[Environment]:
        """The recipe's environments drawn with ``seed``."""
        raise NotImplementedError

    def get_data(self) -> dict:
        envs = self.recipe_environments(self.data_seed or 0)
        data = DomainData(
            name=self.name,
            environments=list(envs),
            test_env=self.test_env,
            num_classes=self.num_classes,
            holdout_fraction=self.holdout_fraction,
            split_seed=self.split_seed or 0,
            domainbed_split_seeds=True,
            val_env=self.val_env,
        )
        return {"data": data}
