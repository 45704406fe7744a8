"""Environments: the unit of distribution shift, and DomainBed's in/out holdout split.

An environment is a named set of labelled examples. Small data sets keep ``x``
as a tensor (resident on the training device, indexed directly in the hot
loop); large image sets keep a lazy image table that loads and transforms
files when indexed. Both support ``len``, ``x[idx]`` with a LongTensor of
indices (``Environment.take``, the sampler's draw), and ``subset``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from shiftbench.data.seeds import split_seeds


class LazyInputs(Protocol):
    """Inputs that are materialized on indexing (e.g. image files on disk)."""

    shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor: ...

    def subset(self, idx: np.ndarray) -> LazyInputs: ...

    def to(self, device: torch.device | str) -> LazyInputs: ...


@dataclass(frozen=True, eq=False)
class Environment:
    """A named domain: inputs ``x`` (tensor or lazy) and int64 labels ``y``."""

    name: str
    x: Any
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(
                f"environment {self.name!r}: {len(self.x)} inputs, {len(self.y)} labels"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and labels at ``idx`` (a 1-d LongTensor on the data's device): the values
        of ``x[idx], y[idx]``. On contiguous tensors through ``index_select``, which skips
        advanced indexing's argument parsing and restriding: drawing 64 digits with their
        labels takes 5.5 µs against 11 to 13 µs on a CPU core (``perf/sampler.py``), in every
        training step. Other strides keep ``x[idx]``, whose output follows the input's memory
        format (a channels-last input stays channels-last, so the convolutions see what they
        saw)."""
        dense = isinstance(self.x, torch.Tensor) and self.x.is_contiguous()
        x = self.x.index_select(0, idx) if dense else self.x[idx]  # lazy inputs load by index
        return x, self.y.index_select(0, idx)

    def subset(self, idx: np.ndarray, name: str | None = None) -> Environment:
        """The examples at ``idx``, as a new environment."""
        index = torch.as_tensor(idx, dtype=torch.long)
        x = self.x[index] if isinstance(self.x, torch.Tensor) else self.x.subset(np.asarray(idx))
        return Environment(name or self.name, x, self.y[index])

    def to(self, device: torch.device | str) -> Environment:
        """The same environment with tensors on ``device`` (lazy inputs decide for themselves)."""
        return Environment(self.name, self.x.to(device), self.y.to(device))


def split_holdout(env: Environment, fraction: float, seed: int) -> tuple[Environment, Environment]:
    """DomainBed's ``split_dataset``: a seeded permutation, the first ``fraction`` held out.

    Returns ``(in_split, out_split)``; the out split is the validation part.
    """
    inn, out, _ = split_parts(env, fraction, seed)
    return inn, out


def split_parts(
    env: Environment, fraction: float, seed: int, measure_fraction: float = 0.0
) -> tuple[Environment, Environment, Environment]:
    """:func:`split_holdout` with a third, disjoint part: ``(in, out, measure)``.

    The seeded permutation's first ``fraction`` is the out split (the same examples as
    :func:`split_holdout`'s), the next ``measure_fraction`` the examples the measures may
    use (the measures study's ``*_heldout`` measures), the rest the in split: the data a
    measure sees is then never the data that defines the IID gap nor trained on.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {fraction}")
    if not 0.0 <= measure_fraction < 1.0 - fraction:
        raise ValueError(
            f"measure_fraction must be in [0, 1 - {fraction}), got {measure_fraction}"
        )
    perm = np.random.RandomState(seed).permutation(len(env))
    n_out = int(len(env) * fraction)
    n_measure = n_out + int(len(env) * measure_fraction)
    return (
        env.subset(perm[n_measure:], f"{env.name}_in"),
        env.subset(perm[:n_out], f"{env.name}_out"),
        env.subset(perm[n_out:n_measure], f"{env.name}_measure"),
    )


@dataclass(frozen=True, eq=False)
class DomainData:
    """What every dataset plugin's ``get_data`` returns (as ``{"data": DomainData}``).

    ``environments`` are whole domains; the objective splits each into in/out
    parts with :func:`split_holdout` and trains on the in parts of the
    training environments (all but ``test_env`` unless ``train_envs`` names
    them: shift studies train on one domain and evaluate on every other).
    A leave-one-domain-out companion run (``val_env >= 0``) leaves ``val_env`` out of
    training as well. Environment ``i`` is split with the seed ``split_seed + i``, or DomainBed's
    ``seed_hash(split_seed, i)`` when ``domainbed_split_seeds``
    (:func:`shiftbench.data.seeds.split_seeds`).
    ``measure_fraction`` > 0 takes a third part of each training environment, disjoint
    from both, for the generalization measures (:meth:`measure_sets`).
    """

    name: str
    environments: list[Environment]
    test_env: int
    num_classes: int
    holdout_fraction: float = 0.2
    split_seed: int = 0
    train_envs: tuple[int, ...] | None = None
    domainbed_split_seeds: bool = False
    val_env: int = -1
    measure_fraction: float = 0.0
    _splits: dict[str, list[tuple[Environment, Environment, Environment]]] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        n = len(self.environments)
        if n < 2:
            raise ValueError(f"{self.name}: needs at least 2 environments, got {n}")
        if not 0 <= self.test_env < n:
            raise ValueError(f"{self.name}: test_env={self.test_env} out of range 0..{n - 1}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"{self.name}: holdout_fraction must be in (0, 1)")
        if not 0.0 <= self.measure_fraction < 1.0 - self.holdout_fraction:
            raise ValueError(
                f"{self.name}: measure_fraction must be in [0, 1 - holdout_fraction), got "
                f"{self.measure_fraction}"
            )
        if self.train_envs is not None and (
            not self.train_envs
            or self.test_env in self.train_envs
            or not all(0 <= i < n for i in self.train_envs)
        ):
            raise ValueError(
                f"{self.name}: train_envs {self.train_envs} must be non-empty, in "
                f"range and exclude test_env={self.test_env}"
            )
        if self.val_env >= 0 and (self.val_env >= n or self.val_env == self.test_env or n < 3):
            raise ValueError(
                f"{self.name}: val_env={self.val_env} must be in 0..{n - 1}, differ from "
                f"test_env={self.test_env} and leave an environment to train on"
            )

    @property
    def training_indices(self) -> tuple[int, ...]:
        """The environments trained on: ``train_envs`` if given, else all but ``test_env``
        (DomainBed's leave-one-environment-out) and ``val_env``."""
        if self.train_envs is not None:
            return tuple(self.train_envs)
        left_out = (self.test_env, self.val_env)
        return tuple(i for i in range(len(self.environments)) if i not in left_out)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.environments[0].input_shape

    @property
    def env_names(self) -> list[str]:
        return [env.name for env in self.environments]

    def splits(self, device: torch.device | str = "cpu") -> list[tuple[Environment, Environment]]:
        """(in, out) split of every environment on ``device``, seeded per environment as
        DomainBed does; computed once per device and reused by every trial of a worker."""
        return [(inn, out) for inn, out, _ in self._parts(device)]

    def measure_sets(self, device: torch.device | str = "cpu") -> list[Environment]:
        """The measure part of each training environment (empty when ``measure_fraction``
        is 0): examples neither trained on nor in the out split that defines ``id_acc``."""
        parts = self._parts(device)
        return [parts[i][2] for i in self.training_indices if len(parts[i][2])]

    def _parts(self, device: torch.device | str) -> list[tuple[Environment, ...]]:
        key = str(device)
        n = len(self.environments)
        seeds = (
            split_seeds(self.split_seed, n)
            if self.domainbed_split_seeds
            else [self.split_seed + i for i in range(n)]
        )
        if key not in self._splits:
            training = self.training_indices
            self._splits[key] = [
                tuple(part.to(device) for part in parts)
                for parts in (
                    split_parts(
                        env,
                        self.holdout_fraction,
                        seeds[i],
                        self.measure_fraction if i in training else 0.0,
                    )
                    for i, env in enumerate(self.environments)
                )
            ]
        return self._splits[key]
