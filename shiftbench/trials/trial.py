"""A trial: one (dataset + split, objective parameters, solver + hyperparameters, seed).

Its id is a stable hash of its canonical config (sorted-key JSON), so the
same trial has the same id in every process, on every machine, forever; the
study's name is not part of it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from shiftbench.store import schema

ID_LENGTH = 16


def _items(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


@dataclass(frozen=True)
class Trial:
    """The full resolved configuration of one training run."""

    dataset: str
    dataset_params: tuple[tuple[str, Any], ...]
    objective_params: tuple[tuple[str, Any], ...]
    solver: str
    solver_params: tuple[tuple[str, Any], ...]
    seed: int
    sample: int = 0

    @classmethod
    def make(
        cls,
        dataset: str,
        dataset_params: dict[str, Any],
        objective_params: dict[str, Any],
        solver: str,
        solver_params: dict[str, Any],
        seed: int,
        sample: int = 0,
    ) -> Trial:
        return cls(
            dataset,
            _items(dataset_params),
            _items(objective_params),
            solver,
            _items(solver_params),
            int(seed),
            int(sample),
        )

    @cached_property
    def config(self) -> dict[str, Any]:
        """The canonical config: everything that determines the trial's numbers."""
        return {
            "dataset": self.dataset,
            "dataset_params": dict(self.dataset_params),
            "objective_params": dict(self.objective_params),
            "solver": self.solver,
            "solver_params": dict(self.solver_params),
            "seed": self.seed,
        }

    @cached_property
    def config_json(self) -> str:
        return json.dumps(self.config, sort_keys=True, separators=(",", ":"))

    @cached_property
    def trial_id(self) -> str:
        return hashlib.sha256(self.config_json.encode()).hexdigest()[:ID_LENGTH]

    @property
    def data_key(self) -> tuple[str, tuple[tuple[str, Any], ...]]:
        """Trials with the same key load the same data (a worker reuses it)."""
        return self.dataset, self.dataset_params

    @property
    def solver_label(self) -> str:
        """Benchopt-style name, e.g. ``adam[lr=0.001,weight_decay=0.0]``."""
        return schema.solver_label(self.solver, self.solver_params)

    @classmethod
    def from_config(cls, config: dict[str, Any], sample: int = 0) -> Trial:
        return cls.make(
            config["dataset"],
            config["dataset_params"],
            config["objective_params"],
            config["solver"],
            config["solver_params"],
            config["seed"],
            sample,
        )
