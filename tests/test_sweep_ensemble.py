"""The sweep trains vectorized ensembles where they apply, with the same ledger numbers."""

from pathlib import Path

import numpy as np
import pytest

from shiftbench.spec.study import StudyError, load_study
from shiftbench.store import ledger as store
from shiftbench.sweep.driver import run_study
from shiftbench.trials.grouping import plan_groups

# fixed data: an ensemble's members share one data set (DomainBed's default redraws it per trial)
STUDY = """
name: {name}
ensemble: {ensemble}
datasets: {{colored_digits: {{test_env: [2], fixed_data: true}}}}
objective: {{steps: 20, eval_every: 10, model: {model}, width: 16}}
solvers:
  sgd: {{lr: [0.01, 0.1]}}
  adam: {{lr: [0.001, 0.003]}}
search: {{kind: grid}}
seeds: [0, 1]
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def study(tmp_path: Path, name: str, ensemble: str, model: str = "mlp"):
    path = tmp_path / f"{name}.yml"
    path.write_text(STUDY.format(name=name, ensemble=ensemble, model=model))
    return load_study(path)


def test_auto_groups_mlps_on_cpu_but_not_cnns_or_measured_trials(tmp_path):
    trials = study(tmp_path, "a", "auto").trials()
    groups = plan_groups(trials, "auto", uses_gpu=False, measures=False, parallel=2)
    assert sorted(len(g) for g in groups) == [4, 4]
    assert {t.trial_id for g in groups for t in g} == {t.trial_id for t in trials}
    assert all(len({t.solver for t in g}) == 1 for g in groups)
    cnn = study(tmp_path, "c", "auto", model="cnn").trials()
    assert {len(g) for g in plan_groups(cnn, "auto", uses_gpu=False, measures=False)} == {1}
    assert {len(g) for g in plan_groups(cnn, "auto", uses_gpu=True, measures=False)} == {4}
    assert {len(g) for g in plan_groups(trials, "auto", uses_gpu=True, measures=True)} == {1}
    assert {len(g) for g in plan_groups(trials, "off", uses_gpu=True, measures=False)} == {1}
    assert {len(g) for g in plan_groups(trials, 3, uses_gpu=False, measures=False)} == {1, 3}


def test_ensembled_sweep_writes_the_same_rows_as_trial_by_trial(tmp_path):
    store_dir = tmp_path / "store"
    on, off = study(tmp_path, "vec", "auto"), study(tmp_path, "seq", "off")
    assert off.ensemble == "off"
    run_study(on, store_dir, workers=0, progress=False)
    run_study(off, store_dir, workers=0, progress=False)
    a = store.read(store_dir, "vec").sort_values(["trial_id", "step"]).reset_index(drop=True)
    b = store.read(store_dir, "seq").sort_values(["trial_id", "step"]).reset_index(drop=True)
    assert len(a) == len(b) == 8 * 3
    assert (a["trial_id"] == b["trial_id"]).all() and (a["status"] == "done").all()
    for column in ("train_loss", "train_acc", "id_acc", "ood_acc", "epoch"):
        np.testing.assert_allclose(a[column], b[column], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", ["sometimes", 0, -3, 2.5, [4]])
def test_bad_ensemble_values_are_one_line_errors(tmp_path, value):
    path = tmp_path / "bad.yml"
    path.write_text(STUDY.format(name="bad", ensemble=value, model="mlp"))
    with pytest.raises(StudyError, match=r"bad\.yml: ensemble: must be auto, off"):
        load_study(path)
