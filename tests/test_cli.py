"""The ``shiftbench`` command end to end on a tiny study: list, run (bad study, run, resume),
status and report."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from shiftbench import faults
from shiftbench.cli import main
from shiftbench.spec.study import load_study
from shiftbench.store import ledger as store
from shiftbench.studies.optimizer_ood.selection import select
from shiftbench.trials.trial import Trial

TINY = {
    "name": "tiny",
    "description": "two optimizers, one data set",
    "datasets": {"colored_digits": {"test_env": [2]}},
    "objective": {"steps": 20, "eval_every": 10, "model": "mlp", "depth": 1, "width": 16},
    "solvers": {"sgd": {"lr": {"loguniform": [1.0e-2, 1.0e-1]}}, "adam": {}},
    "search": {"kind": "random", "trials_per_solver": 1, "seed": 0},
    "seeds": [0, 1],
    "analyses": ["id_ood_table", "id_ood_scatter"],
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def write(path, raw):
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_list_shows_solvers_datasets_and_analyses():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    sections = re.split(r"^(\w+):$", result.output, flags=re.M)
    named = dict(zip(sections[1::2], sections[2::2]))
    assert {"solvers", "datasets", "objective", "measures", "analyses"} <= set(named)
    solvers = re.findall(r"^  (\w+)\s+lr=", named["solvers"], flags=re.M)
    assert sorted(solvers) == ["adam", "adamw", "momentum", "nesterov", "rmsprop", "sgd"]
    assert "search: " in named["solvers"] and "lr~LogUniform" in named["solvers"]
    datasets = re.findall(r"^  (\w+)\s", named["datasets"], flags=re.M)
    assert {"colored_digits", "rotated_digits"} <= set(datasets)
    assert "test_env=2" in named["datasets"]
    assert "id_ood_table" in named["analyses"] and "id_ood_scatter" in named["analyses"]
    assert "steps=400" in named["objective"]


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda r: r["solvers"].update(adagrad={}), "solvers.adagrad"),
        (lambda r: r["objective"].update(steps="20"), "objective.steps"),
        (lambda r: r.update(seeds=[0, 0]), "seeds"),
    ],
)
def test_run_with_a_bad_study_is_one_line_and_writes_nothing(tmp_path, change, key):
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    change(raw)
    path = write(tmp_path / "bad.yml", raw)
    store_dir = tmp_path / "store"
    result = invoke("run", path, "--store", store_dir, "--workers", 0, "--quiet")
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert str(path) in lines[0] and key in lines[0]
    assert not store_dir.exists()


def test_run_status_resume_and_report(tmp_path):
    path = write(tmp_path / "tiny.yml", TINY)
    store_dir, out = tmp_path / "store", tmp_path / "report"

    # nothing yet: status says all pending, report refuses
    result = invoke("status", path, "--store", store_dir)
    assert result.exit_code == 0
    assert re.search(r"pending\s+4$", result.output, flags=re.M)
    result = CliRunner().invoke(main, ["report", str(path), "--store", str(store_dir)])
    assert result.exit_code != 0 and "no results" in result.output
    assert f"run `shiftbench run {path} --store {store_dir}` first" in result.output
    result = CliRunner().invoke(
        main, ["export", str(path), "--store", str(store_dir), "--benchopt", "x.parquet"]
    )
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "no finished trial" in result.output and f"--store {store_dir}" in result.output

    result = invoke("run", path, "--store", store_dir, "--workers", 0, "--quiet")
    assert result.exit_code == 0, result.output
    assert "tiny: 4 trials, 0 already in the ledger, 4 to run" in result.output
    assert "ran 4 trials" in result.output and "4 done" in result.output

    ledger = store.read(store_dir, "tiny")
    assert ledger["trial_id"].nunique() == 4
    assert sorted(ledger["step"].unique()) == [0, 10, 20]
    assert len(ledger) == 4 * 3 and set(ledger["status"]) == {"done"}

    result = invoke("status", path, "--store", store_dir)
    assert result.exit_code == 0
    assert re.search(r"done\s+4$", result.output, flags=re.M)
    assert re.search(r"pending\s+0$", result.output, flags=re.M)

    # a second run runs nothing and adds no row
    result = invoke("run", path, "--store", store_dir, "--workers", 0, "--quiet")
    assert result.exit_code == 0
    assert "4 already in the ledger, 0 to run" in result.output
    assert "ran 0 trials" in result.output and "nothing new" in result.output
    assert len(store.read(store_dir, "tiny")) == len(ledger)

    result = invoke("report", path, "--store", store_dir, "--out", out)
    assert result.exit_code == 0, result.output
    for name in (
        "report.md",
        "id_ood_table.md",
        "id_ood_table.tex",
        "id_ood_table.csv",
        "id_ood_scatter.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "id_ood_scatter.png").read_bytes()[:4] == b"\x89PNG"
    index = (out / "report.md").read_text()
    assert index.startswith("# tiny: two optimizers, one data set")
    assert "id_ood_scatter.png" in index

    # the table is training-domain selection over the ledger
    table = pd.read_csv(out / "id_ood_table.csv")
    expected = select(store.final_rows(ledger), "training_domain").set_index("solver")
    assert sorted(table["solver"]) == ["adam", "sgd"]
    for _, got in table.iterrows():
        want = expected.loc[got["solver"]]
        assert got["ood_acc_mean"] == pytest.approx(want["ood_acc_mean"])
        assert got["id_acc_mean"] == pytest.approx(want["id_acc_mean"])
        assert got["seeds"] == 2 and got["test_env"] == 2

    # default report folder: STORE/reports/STUDY
    result = invoke("report", path, "--store", store_dir)
    assert result.exit_code == 0
    assert (store_dir / "reports" / "tiny" / "report.md").is_file()

    # a solver dropped from the study file leaves the report (its rows stay in the ledger)
    write(path, {**TINY, "solvers": {"adam": {}}})
    result = invoke("report", path, "--store", store_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(pd.read_csv(out / "id_ood_table.csv")["solver"]) == ["adam"]
    assert len(store.read(store_dir, "tiny")) == len(ledger)


def test_negative_workers_is_an_error(tmp_path):
    path = write(tmp_path / "tiny.yml", TINY)
    result = CliRunner().invoke(
        main, ["run", str(path), "--store", str(tmp_path / "s"), "--workers", "-1"]
    )
    assert result.exit_code != 0 and "--workers must be >= 0" in result.output


def test_run_and_status_print_each_failure_reason_with_a_count_and_a_trial(tmp_path, monkeypatch):
    path = write(tmp_path / "tiny.yml", {**TINY, "retries": 0})
    store_dir = tmp_path / "store"
    monkeypatch.setenv(faults.ENV, json.dumps([{"at": "trial.start", "do": "raise"}]))
    result = invoke("run", path, "--store", store_dir, "--workers", 0, "--quiet")
    assert result.exit_code == 1
    ids = set(store.read(store_dir, "tiny")["trial_id"])
    for command in ("run", "status"):
        if command == "status":
            result = invoke("status", path, "--store", store_dir)
        found = re.findall(
            r"^\s+(\d+) x shiftbench\.faults\.InjectedFault: fault injected at trial\.start"
            r"  \(e\.g\. trial (\w+)\)$",
            result.output,
            flags=re.M,
        )
        assert len(found) == 1 and found[0][0] == "4" and found[0][1] in ids, result.output


def test_failure_reasons_are_the_last_error_lines_of_latest_attempts():
    def row(trial, attempt, status, error):
        return {"trial_id": trial, "attempt": attempt, "status": status, "error": error}

    ledger = pd.DataFrame(
        [
            row("a", 0, "failed", "Traceback\n  File x\nValueError: bad lr\n"),
            row("a", 1, "failed", "Traceback\nFileNotFoundError: /d/PACS: get it at u\n"),
            row("b", 0, "failed", "Traceback\nFileNotFoundError: /d/PACS: get it at u"),
            row("c", 0, "failed", "Traceback\nValueError: bad lr"),
            row("c", 1, "done", ""),
            row("d", 0, "timeout", "stopped after timeout_s=5 seconds"),
            row("e", 0, "failed", None),
        ]
    )
    assert store.failure_reasons(ledger) == [
        ("FileNotFoundError: /d/PACS: get it at u", 2, "a"),
        ("stopped after timeout_s=5 seconds", 1, "d"),
        ("(no error text)", 1, "e"),
    ]
    assert store.failure_reasons(ledger, {"b", "c"}) == [
        ("FileNotFoundError: /d/PACS: get it at u", 1, "b")
    ]


@pytest.mark.parametrize(
    "dataset, params, words",
    [
        ("pacs", {}, ["PACS", "domainbed.scripts.download"]),
        ("vlcs", {}, ["VLCS", "domainbed.scripts.download"]),
        ("colored_mnist", {}, ["MNIST", "torchvision.datasets.MNIST"]),
        ("cifar10_c", {"corruption": "fog"}, ["cifar-10-batches-py", "cs.toronto.edu"]),
        ("hf_domains", {"path": "my_domains"}, ["my_domains", "Hugging Face"]),
        ("char_text", {"path": "missing.txt"}, ["missing.txt", "standard library"]),
    ],
)
def test_run_without_a_datasets_files_stops_before_any_trial_in_one_line(
    tmp_path, dataset, params, words
):
    """Each dataset's own check runs before Ray starts: one line naming the study file, the
    dataset key, the missing path and where to get the data; nothing is written."""
    data = tmp_path / "data"
    data.mkdir()
    if "path" in params and dataset == "char_text":
        params = {"path": str(data / params["path"])}
    elif dataset != "char_text":
        params = {**params, "data_home": str(data)}
    raw = {**TINY, "datasets": {dataset: params}, "analyses": []}
    path = write(tmp_path / "nodata.yml", raw)
    store_dir = tmp_path / "store"
    result = CliRunner().invoke(main, ["run", str(path), "--store", str(store_dir), "--quiet"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert f"{path}: datasets.{dataset}: " in lines[0] and str(data) in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert not store_dir.exists()


def test_a_folder_dataset_whose_files_are_there_passes_the_check(tmp_path):
    for env in ("art_painting", "cartoon", "photo", "sketch"):
        (tmp_path / "PACS" / env / "dog").mkdir(parents=True)
    raw = {**TINY, "datasets": {"pacs": {"data_home": str(tmp_path)}}}
    study = load_study(write(tmp_path / "pacs.yml", raw))
    study.check_data(study.trials())


def test_a_study_of_27_million_trials_is_refused_by_every_command(tmp_path):
    """Three lists of 300 values: counted, not expanded; one line naming the keys."""
    values = list(range(1, 301))
    raw = {
        **TINY,
        "objective": {**TINY["objective"], "steps": values, "width": values},
        "solvers": {"sgd": {"lr": [i / 1000 for i in values]}},
        "search": {"kind": "grid"},
        "seeds": [0],
    }
    path = write(tmp_path / "huge.yml", raw)
    store_dir = tmp_path / "store"
    for args in (
        ["run", str(path)],
        ["status", str(path)],
        ["report", str(path)],
        ["export", str(path), "--benchopt", "huge.parquet"],
        ["rerun", "0123456789abcdef", "--study", str(path)],
    ):
        result = CliRunner().invoke(main, [*args, "--store", str(store_dir)])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1, result.output
        assert "expands to 27,000,000 trials, over the limit of 100,000" in lines[0]
        assert "objective.steps (300) x objective.width (300) x solvers.sgd.lr (300)" in lines[0]
        assert "--trial-limit 27000000" in lines[0]
    assert not store_dir.exists()


def test_importing_the_cli_imports_no_training_library():
    """`shiftbench --help` and the commands' start-up must not pay for torch, Ray & co."""
    code = (
        "import sys, shiftbench.cli; "
        "print(sorted(m for m in ('torch', 'ray', 'timm', 'datasets', 'matplotlib', "
        "'torchvision', 'benchopt') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


LARGE = {
    **TINY,
    "objective": {**TINY["objective"], "steps": list(range(1, 11)), "width": [4, 8]},
    "solvers": {"sgd": {"lr": [i / 1000 for i in range(1, 101)]}},
    "search": {"kind": "grid"},
    "seeds": list(range(10)),
    "analyses": ["id_ood_table"],
}


@pytest.fixture
def built(monkeypatch) -> list[int]:
    """One entry per Trial built (Trial.make, counted around the real one)."""
    built, make = [], Trial.make.__func__
    monkeypatch.setattr(Trial, "make", classmethod(lambda *a: built.append(1) or make(*a)))
    return built


def test_status_on_a_large_grid_builds_no_trial(tmp_path, built):
    """20,000 trials: `status` counts them from id numbers, where building every Trial took
    seconds and gigabytes a million."""
    path, store_dir = write(tmp_path / "large.yml", LARGE), tmp_path / "store"
    result = invoke("status", path, "--store", store_dir)
    assert "tiny: 20000 trials" in result.output
    assert re.search(r"pending\s+20000$", result.output, flags=re.M) and built == []


@pytest.mark.slow
def test_run_and_report_on_a_large_grid_build_only_the_trial_they_run(tmp_path, built):
    path, store_dir = write(tmp_path / "large.yml", LARGE), tmp_path / "store"
    result = invoke("run", path, "--store", store_dir, "--workers", 0, "--max-trials", 1)
    assert "tiny: 20000 trials, 0 already in the ledger, 20000 to run" in result.output
    assert "ran 1 trials" in result.output and "incomplete: 19999 pending" in result.output
    assert 1 <= len(built) <= 3, len(built)  # the trial run (by each plan that lists it)
    result = invoke("status", path, "--store", store_dir)
    assert re.search(r"pending\s+19999$", result.output, flags=re.M)
    built.clear()
    result = invoke("report", path, "--store", store_dir)
    assert result.exit_code == 0 and "report written" in result.output and built == []
