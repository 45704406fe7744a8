"""Trial ids: a stable hash of the canonical config, the same in every process, and changed
by every field that determines the trial's numbers."""

import hashlib
import json
import subprocess
import sys

import pytest

from shiftbench.trials.trial import ID_LENGTH, Trial

CONFIG = {
    "dataset": "colored_digits",
    "dataset_params": {"test_env": 2, "holdout_fraction": 0.2, "split_seed": 0},
    "objective_params": {"steps": 20, "eval_every": 10, "model": "mlp", "width": 16},
    "solver": "adam",
    "solver_params": {"lr": 0.001, "weight_decay": 0.0, "batch_size": 32},
    "seed": 1,
}
# Regression value: trial ids are ledger keys, so this must never change.
EXPECTED_ID = "d893bfbd9f3277aa"


def make(config=CONFIG, sample=0):
    return Trial.from_config(config, sample)


def test_id_is_a_prefix_of_the_sha256_of_sorted_key_json():
    trial = make()
    canonical = json.dumps(CONFIG, sort_keys=True, separators=(",", ":"))
    assert trial.config == CONFIG
    assert trial.config_json == canonical
    assert trial.trial_id == hashlib.sha256(canonical.encode()).hexdigest()[:ID_LENGTH]
    assert len(trial.trial_id) == ID_LENGTH and int(trial.trial_id, 16) >= 0


def test_id_regression_value():
    assert make().trial_id == EXPECTED_ID


def test_id_does_not_depend_on_dict_insertion_order():
    reordered = {
        key: dict(reversed(list(value.items()))) if isinstance(value, dict) else value
        for key, value in reversed(list(CONFIG.items()))
    }
    assert list(reordered) != list(CONFIG)
    assert make(reordered).trial_id == make().trial_id


def _changed(path, value):
    config = json.loads(json.dumps(CONFIG))
    if len(path) == 1:
        config[path[0]] = value
    else:
        config[path[0]][path[1]] = value
    return config


@pytest.mark.parametrize(
    "path, value",
    [
        (("dataset",), "rotated_digits"),
        (("dataset_params", "test_env"), 1),
        (("dataset_params", "split_seed"), 1),
        (("objective_params", "steps"), 21),
        (("objective_params", "model"), "cnn"),
        (("objective_params", "extra"), 0),
        (("solver",), "adamw"),
        (("solver_params", "lr"), 0.0010000001),
        (("solver_params", "batch_size"), 33),
        (("seed",), 2),
    ],
)
def test_id_changes_when_any_field_changes(path, value):
    assert make(_changed(path, value)).trial_id != make().trial_id


def test_int_and_float_values_are_distinct_configs():
    # 1 and 1.0 serialise differently, so they are different trials (never silently merged)
    a = make(_changed(("solver_params", "batch_size"), 32.0))
    assert a.trial_id != make().trial_id


def test_sample_index_is_bookkeeping_not_identity():
    assert make(sample=3).trial_id == make(sample=0).trial_id
    assert make(sample=3).sample == 3


def test_round_trip_through_config():
    trial = make(sample=2)
    again = Trial.from_config(json.loads(trial.config_json), sample=2)
    assert again == trial and again.trial_id == trial.trial_id
    assert again.data_key == ("colored_digits", trial.dataset_params)


def test_solver_label():
    assert make().solver_label == "adam[batch_size=32,lr=0.001,weight_decay=0]"


def test_id_is_the_same_in_another_process():
    code = (
        "import json, sys; from shiftbench.trials.trial import Trial; "
        "print(Trial.from_config(json.loads(sys.argv[1])).trial_id)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(CONFIG)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert out.stdout.strip() == make().trial_id
