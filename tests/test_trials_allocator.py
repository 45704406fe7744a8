"""Keeping freed memory: with the setting, tensors freed together are served again without page
faults (glibc's default hands them back and faults them in anew), no number of a trial
changes, and the ledger records it."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shiftbench.trials import allocator
from shiftbench.trials.accel import Accel
from shiftbench.trials.runner import TrialRunner
from tests.test_trials_accel import trial

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.skipif(not allocator.can_retain(), reason="the C library is not glibc"),
    pytest.mark.usefixtures("one_torch_thread"),
]

# The page faults of a digits CNN's trial in a fresh process (the allocator is per process),
# after a first trial: 60 SGD steps evaluated every 5, so that evaluations' activations (a few
# MiB per split, freed together) and training steps interleave, as in any study. The fewest
# of three trials: Python's own object arenas, which no malloc setting governs, may add a
# thousand faults to one of them.
FAULTS = """
import resource, sys
import torch
from shiftbench.plugins import registry
from shiftbench.trials.accel import Accel
from shiftbench.trials.runner import TrialRunner
from shiftbench.trials.trial import Trial
torch.set_num_threads(1)
objective = registry.defaults(registry.objective_class())
objective = {**objective, "steps": 60, "eval_every": 5, "width": 32}
objective.pop("seed")
dataset = registry.defaults(registry.dataset_class("colored_digits"))
sgd = registry.defaults(registry.solver_class("sgd"))
trial = Trial.make("colored_digits", dataset, objective, "sgd", sgd, 0)
runner = TrialRunner({}, device="cpu", accel=Accel(retain_memory=sys.argv[1] == "on"))
runner.run(trial, "faults")
counts = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    assert runner.run(trial, "faults").status == "done"
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(counts))
"""


def faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1])


def test_freed_memory_is_served_again_without_page_faults():
    """glibc's default gives the evaluations' memory back and faults it in again: 20,000 to
    100,000 faults (up to 400 MiB of fresh pages) in this trial, as the heap's history goes;
    kept, one."""
    assert faults("off") > 5_000
    assert faults("on") < 500


def test_keeping_memory_changes_no_number_and_is_recorded():
    """Same arithmetic, other pages: every number of every checkpoint is identical. Kept is
    set last, as the process's other trials (``auto``) have it."""
    t = trial()
    rows = {}
    for keep in (False, True):
        outcome = TrialRunner({}, device="cpu", accel=Accel(retain_memory=keep)).run(t, "keep")
        assert outcome.status == "done", outcome.error
        assert {row["accel.retain_memory"] for row in outcome.rows} == {keep}
        assert allocator.retained() is keep
        columns = ["train_loss", "id_acc", "ood_acc"]
        rows[keep] = np.array([[row[c] for c in columns] for row in outcome.rows])
    np.testing.assert_array_equal(rows[True], rows[False])
