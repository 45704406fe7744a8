"""A unit of work: one value from the sweep's queue to the runner."""

from __future__ import annotations

import pytest
from conftest import TINY_STUDY

from shiftbench.measures.config import MeasureConfig
from shiftbench.spec.study import load_study
from shiftbench.trials.ensemble import run_group
from shiftbench.trials.runner import TrialRunner
from shiftbench.trials.unit import WorkUnit


def test_a_unit_carries_the_study_settings_and_each_trials_attempt(make_study):
    study = load_study(make_study(measures=["l2"], measure_config={"seed": 3}))
    a, b, *_ = study.trials()
    unit = WorkUnit.of([a, b], {a.trial_id: 2, b.trial_id: 0, "other": 5}, study)
    assert unit.trials == (a, b) and unit.attempts == (2, 0)
    assert (unit.study, unit.measures) == ("tiny", ("l2",))
    assert unit.measure_config == MeasureConfig(seed=3) == study.measure_config
    with pytest.raises(ValueError, match="one attempt per trial"):
        WorkUnit((a, b), (0,), "tiny")
    with pytest.raises(ValueError, match="one attempt per trial"):
        WorkUnit((), (), "tiny")


def test_run_group_runs_the_unit_at_its_attempt_with_its_measures(make_study):
    study = load_study(make_study(seeds=[0], measures=["l2"], objective=TINY_STUDY["objective"]))
    trial = study.trials()[0]
    unit = WorkUnit.of([trial], {trial.trial_id: 1}, study)
    [outcome] = run_group(TrialRunner({}, device="cpu"), unit)
    assert outcome.status == "done", outcome.error
    assert {row["attempt"] for row in outcome.rows} == {1}
    assert {row["study"] for row in outcome.rows} == {"tiny"}
    assert outcome.rows[-1]["measure.l2"] > 0 and "measure.l2" not in outcome.rows[0]
