"""The declarative study sections: run settings apart from the design, and their one-line
errors located by key."""

from __future__ import annotations

import copy

import pytest
import yaml

from shiftbench.spec.settings import Resources, RunSettings, Search, SettingError, validate
from shiftbench.spec.study import StudyError, load_study
from shiftbench.trials.accel import Accel

STUDY = {
    "name": "s",
    "datasets": {"colored_digits": {"test_env": [2]}},
    "solvers": {"sgd": {"lr": [0.01, 0.1]}},
    "search": {"kind": "grid"},
    "seeds": [0, 1],
}


def write(tmp_path, **changes):
    raw = {**copy.deepcopy(STUDY), **changes}
    path = tmp_path / "s.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_run_settings_are_not_the_design(tmp_path):
    """Every run setting changed at once: the same trials, the same ids."""
    plain = load_study(write(tmp_path))
    run = {
        "retries": 0,
        "resources": {"cpus": 2, "gpus": "auto"},
        "timeout_s": 30,
        "ensemble": "off",
        "accel": {"precision": "fp32", "flush_denormal": False},
        "trial_limit": 10,
        "keep": "final",
    }
    tuned = load_study(write(tmp_path, **run))
    assert [t.trial_id for t in tuned.trials()] == [t.trial_id for t in plain.trials()]
    assert plain.run == RunSettings()
    assert tuned.run == RunSettings(
        retries=0,
        resources=Resources(cpus=2.0, gpus=1.0, pack_gpus=True),
        timeout_s=30.0,
        ensemble="off",
        accel=Accel(precision="fp32", flush_denormal=False),
        trial_limit=10,
        keep="final",
    )
    assert (tuned.retries, tuned.timeout_s, tuned.keep) == (0, 30.0, "final")


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        ("retries", -1, "retries: must be an integer >= 0, got -1"),
        ("resources", {"gpus": -1}, "resources.gpus: must be a number >= 0, or auto, got -1"),
        ("resources", {"gpu": 1}, "resources.gpu: unknown key; allowed: cpus, gpus"),
        ("resources", [1], "resources: must be a mapping"),
        ("timeout_s", True, "timeout_s: must be a number of seconds > 0, got True"),
        ("ensemble", 0, "ensemble: must be auto, off or an integer >= 1, got 0"),
        ("accel", {"precision": "fp8"}, "accel.precision: precision must be one of"),
        ("trial_limit", None, "trial_limit: must be an integer >= 1, got None"),
        ("keep", "all", "keep: must be one of none, final, checkpoints, got 'all'"),
        ("search", {"kind": "bayes"}, "search.kind: must be 'random' or 'grid', got 'bayes'"),
        ("search", {"budget": 1}, "search.budget: unknown key; allowed: "),
        ("seeds", [0, -1], "seeds[1]: must be an integer >= 0, got -1"),
        ("seeds", [3, 3], "seeds: seeds must be distinct"),
    ],
)
def test_a_bad_setting_is_one_line_naming_file_and_key(tmp_path, key, value, line):
    path = write(tmp_path, **{key: value})
    with pytest.raises(StudyError) as info:
        load_study(path)
    assert str(info.value).startswith(f"{path}: {line}")


def test_validate_locates_the_key_without_a_file():
    assert validate(Search, {"kind": "grid"}).kind == "grid"
    with pytest.raises(SettingError) as info:
        validate(Search, {"seed": -2}, "search")
    assert (info.value.key, info.value.message) == (
        "search.seed",
        "must be an integer >= 0, got -2",
    )
