"""GPU packing: trials per GPU from a measured peak in closed form, Ray fractions that always
fit, ``gpus: auto`` in a study file, and its fallback to CPUs on a cluster without a GPU."""

import pytest
from click.testing import CliRunner
from conftest import assert_exactly_once

from shiftbench.cli import main
from shiftbench.spec.study import Resources, StudyError, load_study, parse_study
from shiftbench.store import ledger as store
from shiftbench.sweep.driver import run_study
from shiftbench.sweep.packing import (
    CONTEXT_BYTES,
    HEADROOM,
    MAX_PER_GPU,
    gpu_fraction,
    trials_per_gpu,
)

GIB = 2**30


@pytest.mark.parametrize(
    "peak, total, expected",
    [
        # 0.85 x 80 GiB = 69632 MiB over (100 + 512) MiB = 113.8 trials: capped at 32
        (100 * 2**20, 80 * GIB, 32),
        # 0.85 x 80 GiB = 68 GiB over (3 + 0.5) GiB = 19.4 trials
        (3 * GIB, 80 * GIB, 19),
        # 0.85 x 24 GiB = 20.4 GiB over (7 + 0.5) GiB = 2.7 trials
        (7 * GIB, 24 * GIB, 2),
        # 0.85 x 16 GiB = 13.6 GiB over the 0.5 GiB context alone = 27.2 trials
        (0, 16 * GIB, 27),
        # 0.85 x 40 GiB = 34 GiB over (16.5 + 0.5) GiB = exactly 2 trials
        (33 * GIB // 2, 40 * GIB, 2),
    ],
)
def test_trials_per_gpu_is_the_closed_form(peak, total, expected):
    assert trials_per_gpu(peak, total) == expected
    n = trials_per_gpu(peak, total)
    assert n == MAX_PER_GPU or (n + 1) * (peak + CONTEXT_BYTES) > HEADROOM * total


def test_a_trial_bigger_than_the_gpu_still_gets_a_whole_one():
    assert trials_per_gpu(100 * GIB, 80 * GIB) == 1
    with pytest.raises(ValueError, match="GPU memory must be > 0"):
        trials_per_gpu(GIB, 0)


@pytest.mark.parametrize("per_gpu", [1, 2, 3, 7, 19, 32])
def test_gpu_fractions_always_fit_in_one_gpu(per_gpu):
    fraction = gpu_fraction(per_gpu)
    assert per_gpu * fraction <= 1.0 and (per_gpu + 1) * fraction > 1.0 - 1e-4
    assert round(fraction, 4) == fraction  # Ray's resource resolution


def test_study_gpus_auto_packs_and_bad_amounts_are_located(tmp_path):
    raw = {"name": "p", "datasets": {"colored_digits": {}}, "solvers": {"sgd": {}}}
    study = parse_study({**raw, "resources": {"gpus": "auto", "cpus": 2}}, tmp_path / "p.yml")
    assert study.resources == Resources(cpus=2.0, gpus=1.0, pack_gpus=True)
    fixed = parse_study({**raw, "resources": {"gpus": 0.25}}, tmp_path / "p.yml").resources
    assert fixed == Resources(cpus=1.0, gpus=0.25, pack_gpus=False)
    with pytest.raises(StudyError, match=r"resources\.gpus: must be a number >= 0, or auto"):
        parse_study({**raw, "resources": {"gpus": "lots"}}, tmp_path / "p.yml")
    with pytest.raises(StudyError, match=r"resources\.cpus: must be a number >= 0, got -1"):
        parse_study({**raw, "resources": {"gpus": "auto", "cpus": -1}}, tmp_path / "p.yml")


@pytest.mark.ray
def test_gpus_auto_without_a_gpu_runs_on_cpus(ray_cluster, make_study, store_dir, capsys):
    study = load_study(make_study(resources={"gpus": "auto"}))
    summary = run_study(study, store_dir, workers=2, progress=False)
    assert summary.counts == {"done": 4}
    assert_exactly_once(study, store_dir, {"done"})
    assert "gpus: auto, but the cluster has no GPU; using CPUs" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.parametrize(
    "resources, needs",
    [({"cpus": 64}, "64 CPUs and 0 GPUs"), ({"gpus": 2}, "1 CPUs and 2 GPUs")],
)
def test_resources_larger_than_the_cluster_stop_the_run_in_one_line(
    ray_cluster, make_study, store_dir, resources, needs
):
    path = make_study(resources=resources)
    args = ["run", str(path), "--store", str(store_dir), "--workers", "2", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        f"Error: {path}: resources: one trial needs {needs}; the Ray cluster has 2 CPUs and 0 "
        "GPUs: ask for less, or join a larger cluster with --address"
    )
    assert store.read(store_dir, "tiny").empty  # before any trial ran
