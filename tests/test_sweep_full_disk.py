"""A full disk is an error, not a crash: the ledger on a real small file system (a tmpfs,
mounted by root; skipped where mounting is not allowed)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import assert_exactly_once

from shiftbench.cli import main
from shiftbench.spec.study import load_study
from shiftbench.store import artifacts, checkpoint
from shiftbench.store import ledger as store
from shiftbench.sweep import driver as sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# A tiny trial's batch file is about 22 KB: this disk holds two of them, not three.
SMALL = "64k"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs; resize it with ``mount -o remount,size=...``."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL}", "tmpfs", str(folder)],
        capture_output=True,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_a_full_disk_lands_what_fits_then_one_line_and_the_rest_on_the_next_run(
    make_study, small_disk, monkeypatch
):
    monkeypatch.setattr(sweep, "FLUSH_TRIALS", 1)  # each trial is its own batch file
    path = make_study()
    args = ["run", str(path), "--store", str(small_disk), "--workers", "0", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.exception.__class__ is SystemExit
    folder = store.study_dir(small_disk, "tiny")
    assert f"Error: {folder}: disk full (" in result.output
    assert "No space left on device" in result.output
    assert "the rows of 1 finished trials did not land (every other row did)" in result.output
    ledger = store.read(small_disk, "tiny")
    landed = set(ledger["trial_id"])
    assert len(landed) == 2  # all that fit: two batch files
    assert ledger.groupby("trial_id").size().to_dict() == dict.fromkeys(landed, 3)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # no half file
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "ran 2 trials" in result.output
    assert_exactly_once(load_study(path), small_disk, {"done"})


def test_a_model_that_does_not_fit_leaves_no_file(make_study, small_disk):
    trial = load_study(make_study()).trials()[0]
    state = {"weight": torch.ones(64, 1024)}  # 256 KiB: more than the disk holds
    with pytest.raises(OSError) as failed:
        artifacts.Sink(str(small_disk)).save("tiny", trial, 0, "final", state, 20)
    assert store.is_full(failed.value)
    assert [p for p in small_disk.rglob("*") if p.is_file()] == []
    assert artifacts.sizes(small_disk, "tiny") == {}


def test_a_training_state_that_does_not_fit_warns_and_the_last_one_stays(make_study, small_disk):
    trial = load_study(make_study()).trials()[0]
    saved = checkpoint.Checkpoints.of(small_disk, "tiny", [trial.trial_id], 5)
    saved.save({"weight": torch.ones(4)}, 5)
    with pytest.warns(
        RuntimeWarning, match=f"state at step 10 not saved to {saved.url}: disk full"
    ):
        saved.save({"weight": torch.ones(64, 1024)}, 10)  # 256 KiB: the trial trains on
    step, state = saved.load()
    assert step == 5 and torch.equal(state["weight"], torch.ones(4))
    assert [p.name for p in small_disk.rglob("*") if p.is_file()] == ["checkpoint.safetensors"]
