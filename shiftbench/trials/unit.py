"""A unit of a sweep's work: what the driver hands a pool, a worker runs, and the runner
records, as one value instead of five travelling side by side."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shiftbench.measures.config import MeasureConfig
from shiftbench.trials.trial import Trial

if TYPE_CHECKING:
    from shiftbench.spec.study import Study


@dataclass(frozen=True)
class WorkUnit:
    """One trial, or a group trained as one vectorized ensemble, with what its rows need:
    the study's name, each trial's attempt, and the measures to compute at its end (with
    their :class:`~shiftbench.measures.MeasureConfig`)."""

    trials: tuple[Trial, ...]
    attempts: tuple[int, ...]
    study: str
    measures: tuple[str, ...] = ()
    measure_config: MeasureConfig = field(default_factory=MeasureConfig)

    def __post_init__(self) -> None:
        if not self.trials or len(self.trials) != len(self.attempts):
            raise ValueError(
                f"a unit needs one attempt per trial, got {len(self.trials)} trials and "
                f"{len(self.attempts)} attempts"
            )

    @classmethod
    def of(cls, group: Iterable[Trial], attempts: Mapping[str, int], study: Study) -> WorkUnit:
        """The unit of ``group`` in ``study``, at each trial's attempt in ``attempts``."""
        trials = tuple(group)
        return cls(
            trials,
            tuple(attempts[t.trial_id] for t in trials),
            study.name,
            tuple(study.measures),
            study.measure_config,
        )
