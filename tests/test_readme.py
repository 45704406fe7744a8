"""The README's examples, taken from the README itself, do what its text says."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from shiftbench.spec.study import parse_study
from shiftbench.store import ledger as store

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def readme_block(heading: str, language: str) -> str:
    """The first ``language`` code block under the README's ``## heading``."""
    section = README.split(f"## {heading}\n", 1)[1]
    return re.search(rf"```{language}\n(.*?)```", section, flags=re.S).group(1)


def test_the_sample_study_has_the_solvers_it_says_and_a_list_is_a_choice_under_random(
    tmp_path,
):
    raw = yaml.safe_load(readme_block("A study file", "yaml"))
    study = parse_study(raw, tmp_path / "sample.yml")
    said = NUMBERS[raw["description"].split()[0]]
    assert "optimizers" in raw["description"] and len(study.solvers) == said
    trials = study.trials()
    adam = [t for t in trials if t.solver == "adam" and t.seed == 0]
    per_dataset = raw["search"]["trials_per_solver"]
    assert len(adam) == per_dataset * len(raw["datasets"])  # 3 per dataset, not 6
    assert {dict(t.solver_params)["weight_decay"] for t in adam} <= {0.0, 1.0e-4}


def extension_files() -> dict[str, str]:
    """The README's extension examples by the path their first line names."""
    section = README.split("## Extending\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:python|yaml)\n(.*?)```", section, flags=re.S)
    files = {}
    for block in blocks:
        text = textwrap.dedent(block)
        first, _, body = text.partition("\n")
        files[first.removeprefix("# ")] = body
    return files


def test_the_readme_extension_steps_work_as_written(tmp_path):
    """A solver, a dataset, a measure, an analysis and a study, written from the README's blocks
    into a copy of the benchmark, are listed, run, measured, reported and plotted by Benchopt."""
    root = tmp_path / "bench"
    root.mkdir()
    shutil.copy(ROOT / "objective.py", root)
    for kind in ("solvers", "datasets", "measures", "analysis"):
        shutil.copytree(ROOT / kind, root / kind, ignore=shutil.ignore_patterns("__pycache__"))
    files = extension_files()
    assert sorted(files) == [
        "analysis/final_loss.py",
        "benchmarks/extended.yml",
        "datasets/two_blobs.py",
        "measures/counts.py",
        "solvers/adagrad.py",
    ]
    for name, text in files.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text(text)
    env = {**os.environ, "SHIFTBENCH_ROOT": str(root), "RAY_AUTH_MODE": "disabled"}
    study, store_dir = root / "benchmarks" / "extended.yml", tmp_path / "store"

    def shiftbench(*args: str) -> str:
        done = subprocess.run(
            [str(Path(sys.executable).with_name("shiftbench")), *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    listed = shiftbench("list")
    assert re.search(r"^  adagrad\s+lr=0\.01, .*lr_decay=0\.0", listed, flags=re.M), listed
    assert re.search(r"^  two_blobs\s+shift=1\.0", listed, flags=re.M)
    assert "weight_count" in listed and re.search(r"^  final_loss\s", listed, flags=re.M)
    ran = shiftbench("run", str(study), "--store", str(store_dir), "--workers", "0", "--quiet")
    assert "ran 2 trials" in ran and "2 done" in ran, ran
    ledger = store.final_rows(store.read(store_dir, "extended"))
    last = ledger.sort_values("step").groupby("trial_id").tail(1)
    assert (last["measure.weight_count"] > 0).all() and set(ledger["solver"]) == {"adagrad"}
    shiftbench("report", str(study), "--store", str(store_dir), "--out", str(tmp_path / "r"))
    table = pd.read_csv(tmp_path / "r" / "final_loss.csv")
    assert list(table["solver"]) == ["adagrad"]
    assert table["train_loss"][0] == pytest.approx(last["train_loss"].mean())

    exported = shiftbench(
        "export", str(study), "--store", str(store_dir), "--benchopt", "s.parquet"
    )
    assert (root / "outputs" / "s.parquet").is_file()
    command = exported.split("view with: ", 1)[1].strip().split()
    assert command[:2] == ["benchopt", "plot"]
    plotted = subprocess.run(
        [str(Path(sys.executable).with_name("benchopt")), *command[1:], "--no-display"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert plotted.returncode == 0, plotted.stdout + plotted.stderr
    assert list((root / "outputs").glob("*.html"))
