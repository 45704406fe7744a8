"""One driver per study and store; a clear message naming the holder; no stale locks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import assert_exactly_once, faults, wait_for

from shiftbench.cli import main
from shiftbench.spec.study import load_study
from shiftbench.store.lock import StudyLock, StudyLocked

HOLD = """
import sys, time
from shiftbench.store.lock import StudyLock
with StudyLock(sys.argv[1], "tiny"):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_second_holder_is_refused_with_the_holders_name(store_dir):
    with StudyLock(store_dir, "tiny") as lock:
        with pytest.raises(StudyLocked) as refused, StudyLock(store_dir, "tiny"):
            pass
        message = str(refused.value)
        assert str(lock.path) in message
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message
        with StudyLock(store_dir, "other"):  # other studies are independent
            pass
    with StudyLock(store_dir, "tiny"):  # released on exit
        pass


def test_unreadable_holder_file_still_gives_a_message(store_dir):
    with StudyLock(store_dir, "tiny") as lock:
        lock.handle.seek(0)
        lock.handle.truncate()
        lock.handle.write("[not an object]")
        lock.handle.flush()
        with pytest.raises(StudyLocked, match=r"pid \? on \?"), StudyLock(store_dir, "tiny"):
            pass


@pytest.mark.slow
def test_lock_of_a_killed_driver_is_recovered(store_dir):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(store_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StudyLocked, match=f"pid {holder.pid} "), StudyLock(store_dir, "tiny"):
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with StudyLock(store_dir, "tiny"):
        pass


def test_run_command_refuses_a_locked_study(make_study, store_dir):
    study = make_study()
    with StudyLock(store_dir, "tiny"):
        result = CliRunner().invoke(
            main, ["run", str(study), "--store", str(store_dir), "--workers", "0", "--quiet"]
        )
    assert result.exit_code == 1
    assert f"study is being run by pid {os.getpid()}" in result.output
    assert not list(store_dir.glob("study=tiny/*.parquet"))


@pytest.mark.slow
def test_second_driver_is_refused_while_the_first_runs(make_study, store_dir, tmp_path, driver):
    path = make_study()
    started, release = tmp_path / "started", tmp_path / "release"
    first = driver.start(
        "run",
        str(path),
        "--store",
        str(store_dir),
        "--workers",
        "0",
        "--quiet",
        fault_spec=faults(
            {
                "at": "trial.start",
                "do": "sleep",
                "seconds": 300,
                "until": str(release),
                "once": str(started),
            }
        ),
    )
    try:
        wait_for(started.exists, "the first driver to start a trial")
        second = CliRunner().invoke(
            main, ["run", str(path), "--store", str(store_dir), "--workers", "0", "--quiet"]
        )
        assert second.exit_code == 1
        assert f"study is being run by pid {first.pid} on " in second.output
    finally:
        release.touch()
        out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    assert_exactly_once(load_study(path), store_dir, {"done"})
