"""``sweep.result_differences``, the "same numbers" check of reruns and of the fault-injection
tests, on hand-built checkpoint rows where it must and must not find a difference."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from shiftbench.sweep.rerun import result_differences


def rows(**changes: list) -> pd.DataFrame:
    """One trial's three checkpoints, with some columns replaced."""
    base = {
        "step": [0, 10, 20],
        "train_loss": [0.69, 0.5, 0.25],
        "ood_acc": [0.5, 0.625, 0.75],
        "measure.l2": [float("nan"), float("nan"), 3.0],
        "status": ["done"] * 3,
        "git_dirty": [False] * 3,
        "time": [0.0, 1.0, 2.0],
        "attempt": [0] * 3,
        "worker_pid": [100] * 3,
        "sample": [0] * 3,
    }
    return pd.DataFrame({**base, **changes})


@pytest.mark.parametrize(
    "actual",
    [
        rows(),
        rows().iloc[::-1],  # checkpoints compared by step, not by position
        rows(train_loss=[0.69, 0.5, 0.25 * (1 + 1e-7)]),  # within rtol=1e-6
        rows(time=[5.0, 6.0, 9.0], attempt=[1] * 3, worker_pid=[7] * 3, sample=[3] * 3),
        rows(status=["diverged"] * 3, git_dirty=[True] * 3),  # not numbers
        rows(extra=[float("nan")] * 3),  # a column empty in one run only
    ],
)
def test_the_same_numbers_have_no_difference(actual):
    assert result_differences(rows(), actual) == {}


def test_a_changed_number_is_named_with_its_largest_gap():
    actual = rows(train_loss=[0.69, 0.5, 0.26], ood_acc=[0.5, 0.5, 0.75])
    assert result_differences(rows(), actual) == {
        "ood_acc": "max |difference| 0.125",
        "train_loss": "max |difference| 0.01",
    }


def test_a_nan_in_one_run_only_is_a_difference():
    got = result_differences(rows(), rows(**{"measure.l2": [float("nan"), 1.0, 3.0]}))
    assert list(got) == ["measure.l2"]
    got = result_differences(rows(), rows(train_loss=[0.69, 0.5, math.nan]))
    assert list(got) == ["train_loss"]


def test_a_result_in_one_run_only_is_a_difference():
    assert result_differences(rows(), rows(id_acc=[0.5, 0.5, 0.5])) == {
        "id_acc": "present in one run only, or not numeric in both"
    }
    assert result_differences(rows(), rows().drop(columns="ood_acc")) == {
        "ood_acc": "present in one run only, or not numeric in both"
    }


def test_other_checkpoints_are_a_difference():
    assert result_differences(rows(), rows().iloc[:2]) == {
        "step": "checkpoints [0, 10, 20] != [0, 10]"
    }
