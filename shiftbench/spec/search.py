"""Hyperparameter search spaces and seeded samplers.

A space is declared next to its solver (``search_space`` class attribute) and
can be overridden in a study file with the same vocabulary::

    lr: {loguniform: [1.0e-4, 1.0e-1]}
    momentum: {log_one_minus: [-3, -0.5]}      # mu = 1 - 10^u, u ~ U(-3, -0.5)
    batch_size: [32, 64]                       # a grid (random search: uniform choice)
    nesterov: true                             # fixed

Each hyperparameter of each sample is drawn from its own generator, seeded
from (search seed, dataset, solver, hyperparameter name, sample index) and,
when given, the trial seed, so adding a hyperparameter never reshuffles the
others. Drawing sample i anew per trial seed is DomainBed's behaviour
(``scripts/train.py``: ``random_hparams(algorithm, dataset,
misc.seed_hash(args.hparams_seed, args.trial_seed))``); without a trial seed
sample i is one draw shared by every seed.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


class SpaceError(ValueError):
    """A search-space declaration that cannot be used."""


@dataclass(frozen=True)
class Fixed:
    """A single value."""

    value: Any

    def sample(self, rng: np.random.Generator) -> Any:
        return self.value

    def grid(self) -> list[Any]:
        return [self.value]


@dataclass(frozen=True)
class Choice:
    """A finite set: the grid itself, or a uniform choice under random search."""

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise SpaceError("empty grid")

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]

    def grid(self) -> list[Any]:
        return list(self.values)


@dataclass(frozen=True)
class Uniform:
    """U(low, high)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise SpaceError(f"bounds must be finite, got [{self.low}, {self.high}]")
        if not self.low < self.high:
            raise SpaceError(f"needs low < high, got [{self.low}, {self.high}]")

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def grid(self) -> list[Any]:
        raise SpaceError("a continuous distribution has no grid; use a list of values")


@dataclass(frozen=True)
class LogUniform(Uniform):
    """exp(U(log low, log high)); both bounds positive."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low <= 0:
            raise SpaceError(f"loguniform bounds must be positive, got [{self.low}, {self.high}]")

    def sample(self, rng: np.random.Generator) -> float:
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))


@dataclass(frozen=True)
class IntUniform(Uniform):
    """A uniform integer in [low, high]."""

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(int(self.low), int(self.high) + 1))


@dataclass(frozen=True)
class LogOneMinus(Uniform):
    """1 - 10^U(low, high): momenta and Adam betas searched as log10(1 - beta)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.high > 0:
            raise SpaceError(
                f"log_one_minus exponents must be <= 0, got [{self.low}, {self.high}]"
            )

    def sample(self, rng: np.random.Generator) -> float:
        return float(1.0 - 10.0 ** rng.uniform(self.low, self.high))


Space = Fixed | Choice | Uniform
DISTRIBUTIONS: dict[str, type[Uniform]] = {
    "uniform": Uniform,
    "loguniform": LogUniform,
    "int_uniform": IntUniform,
    "log_one_minus": LogOneMinus,
}


def parse_space(spec: Any) -> Space:
    """A space from its study-file form: scalar, list, or ``{distribution: [low, high]}``."""
    if isinstance(spec, Fixed | Choice | Uniform):
        return spec
    if isinstance(spec, list | tuple):
        return Choice(tuple(spec))
    if isinstance(spec, Mapping):
        if len(spec) != 1:
            raise SpaceError(f"a distribution is one of {sorted(DISTRIBUTIONS)} with [low, high]")
        (kind, bounds), *_ = spec.items()
        if kind == "choice":
            if not isinstance(bounds, list | tuple):
                raise SpaceError(f"choice needs a list of values, got {bounds!r}")
            return Choice(tuple(bounds))
        if kind not in DISTRIBUTIONS:
            raise SpaceError(f"unknown distribution {kind!r}; one of {sorted(DISTRIBUTIONS)}")
        if not (isinstance(bounds, list | tuple) and len(bounds) == 2):
            raise SpaceError(f"{kind} needs [low, high], got {bounds!r}")
        if not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds):
            raise SpaceError(f"{kind} bounds must be numbers, got {bounds!r}")
        return DISTRIBUTIONS[kind](float(bounds[0]), float(bounds[1]))
    return Fixed(spec)


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts, stable across processes and platforms."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def random_samples(
    spaces: Mapping[str, Space],
    n: int,
    *,
    seed: int,
    scope: tuple[str, ...],
    trial_seed: int | None = None,
) -> list[dict[str, Any]]:
    """``n`` random configurations; hyperparameter ``h`` of sample ``i`` uses its own generator,
    seeded also from ``trial_seed`` when given (a draw per (sample, trial seed), DomainBed's)."""
    per_seed = () if trial_seed is None else ("trial_seed", int(trial_seed))
    return [
        {
            name: space.sample(
                np.random.default_rng(stable_seed(seed, *scope, name, i, *per_seed))
            )
            for name, space in sorted(spaces.items())
        }
        for i in range(n)
    ]


def grid_samples(spaces: Mapping[str, Space]) -> Iterator[dict[str, Any]]:
    """The full factorial grid over every space (continuous spaces are an error)."""
    names = sorted(spaces)
    for values in itertools.product(*(spaces[name].grid() for name in names)):
        yield dict(zip(names, values))
