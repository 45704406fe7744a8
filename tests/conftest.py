"""Shared fixtures of the ledger, sweep, reliability and report tests: a tiny study on the
offline digits data, a local Ray cluster, the ``shiftbench`` command as a subprocess, the
exactly-once check of a study's ledger, and the HTML site of a tiny run with a headless
Chromium to look at it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
import yaml
from playwright.sync_api import sync_playwright

from shiftbench.spec.expansion_cache import CACHE_ENV
from shiftbench.spec.study import Study
from shiftbench.store import ledger as store
from shiftbench.sweep.cluster import DIR_ENV
from shiftbench.sweep.rerun import result_differences

SHIFTBENCH = Path(sys.executable).parent / "shiftbench"
TINY_STUDY: dict[str, Any] = {
    "name": "tiny",
    "datasets": {"colored_digits": {"test_env": [2]}},
    "objective": {"steps": 20, "eval_every": 10, "model": "mlp", "width": 16},
    "solvers": {"sgd": {"lr": {"loguniform": [0.01, 0.1]}}},
    "search": {"kind": "random", "trials_per_solver": 2, "seed": 0},
    "seeds": [0, 1],
    "retries": 1,
}
CHECKPOINTS = [0, 10, 20]


@pytest.fixture(scope="session", autouse=True)
def expansion_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`shiftbench status` caches expansions: tests (and the commands they start) keep theirs
    in a temporary folder, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("expansion_cache")))
        yield


@pytest.fixture
def make_study(tmp_path: Path) -> Callable[..., Path]:
    """Writes the tiny study (4 trials: 2 sgd samples x 2 seeds), with top-level overrides,
    to ``tmp_path/<name>.yml``."""

    def make(**overrides: Any) -> Path:
        spec = {**TINY_STUDY, **overrides}
        path = tmp_path / f"{spec['name']}.yml"
        path.write_text(yaml.safe_dump(spec))
        return path

    return make


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one intra-op thread avoids spin contention.
    A module asks for it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture(scope="session", autouse=True)
def no_local_cluster(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never join a local cluster that ``shiftbench cluster start`` left running."""
    os.environ[DIR_ENV] = str(tmp_path_factory.mktemp("no-local-cluster"))


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local two-CPU Ray cluster for the session, as ``shiftbench run`` starts it."""
    import ray

    from shiftbench.sweep.connect import start_ray

    start_ray(2, None)
    yield
    ray.shutdown()


def faults(*specs: dict[str, Any]) -> str:
    """The ``SHIFTBENCH_FAULTS`` value for these faults."""
    return json.dumps(list(specs))


def stalled(trial_id: str, started: Path) -> str:
    """The ``SHIFTBENCH_FAULTS`` value that stalls a trial at its start (once, for 300 s),
    creating the file ``started`` when it does."""
    return faults(
        {
            "at": "trial.start",
            "trial": trial_id,
            "do": "sleep",
            "seconds": 300,
            "once": str(started),
        }
    )


class Driver:
    """``shiftbench`` subprocesses tagged with a token, so that every process they start (Ray's
    included) can be found and stopped after a SIGKILL."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.token = uuid.uuid4().hex

    def env(self, fault_spec: str | None = None, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "SHIFTBENCH_TEST_TOKEN": self.token,
            "PYTHONUNBUFFERED": "1",
            "RAY_AUTH_MODE": "disabled",
            **extra,
        }
        env.pop("SHIFTBENCH_FAULTS", None)
        if fault_spec:
            env["SHIFTBENCH_FAULTS"] = fault_spec
        return env

    def start(
        self,
        *args: str,
        fault_spec: str | None = None,
        new_session: bool = False,
        **extra: str,
    ) -> subprocess.Popen:
        """Start ``shiftbench ARGS``; ``new_session``: in a process group of its own (that a
        test may signal as a whole, as Slurm or a terminal does)."""
        return subprocess.Popen(
            [str(SHIFTBENCH), *args],
            cwd=self.cwd,
            text=True,
            env=self.env(fault_spec, **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )

    def processes(self) -> list[psutil.Process]:
        """The processes this driver's commands started that are still alive (zombies aside)."""
        alive = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if (
                    proc.environ().get("SHIFTBENCH_TEST_TOKEN") == self.token
                    and proc.status() != psutil.STATUS_ZOMBIE
                ):
                    alive.append(proc)
            except psutil.Error:
                continue
        return alive

    def run(self, *args: str, fault_spec: str | None = None, **extra: str) -> tuple[int, str]:
        proc = self.start(*args, fault_spec=fault_spec, **extra)
        out, _ = proc.communicate(timeout=300)
        self.reap()
        return proc.returncode, out

    def reap(self) -> None:
        """SIGKILL what the killed drivers left running (Ray's processes), by pid."""
        for proc in self.processes():
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Driver]:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    spawned = Driver(cwd)
    yield spawned
    spawned.reap()


def assert_exactly_once(study: Study, store_dir: Path, statuses: set[str] | None = None) -> None:
    """Every file of the study's ledger is readable, every (trial, attempt, checkpoint) is
    in it once, and every trial of the study has its rows (all checkpoints when done)."""
    folder = store.study_dir(store_dir, study.name)
    for path in folder.glob("*.parquet"):
        pq.read_table(path)  # raises if a file is damaged
    assert not list(folder.glob(".*.tmp"))
    assert store.skipped_files(store_dir, study.name) == {}
    ledger = store.read(store_dir, study.name)
    assert not ledger.duplicated(list(store.KEY_COLUMNS)).any()
    final = store.final_rows(ledger)
    assert set(final["trial_id"]) == {t.trial_id for t in study.trials()}
    for trial_id, rows in final.groupby("trial_id"):
        status = rows["status"].iloc[0]
        assert statuses is None or status in statuses, (trial_id, status)
        if status == "done":
            assert sorted(rows["step"]) == CHECKPOINTS, trial_id


def assert_same_numbers(store_dir: Path, reference_dir: Path, study: str) -> None:
    """Both ledgers hold the same trials with the same results at every checkpoint."""
    got = store.final_rows(store.read(store_dir, study))
    want = store.final_rows(store.read(reference_dir, study))
    assert set(got["trial_id"]) == set(want["trial_id"])
    for trial_id, rows in want.groupby("trial_id"):
        assert result_differences(rows, got[got["trial_id"] == trial_id]) == {}, trial_id


def wait_for(condition, what: str, seconds: float = 240.0) -> None:
    """Poll ``condition`` (a generous limit, so a loaded machine only makes it slower)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


# --- the HTML site of a tiny real run, and a browser to look at it (report tests)

SITE_STUDY = {
    "name": "sitetiny",
    "description": "two optimizers on two digits data sets",
    "datasets": {"colored_digits": {"test_env": [2]}, "rotated_digits": {"test_env": [0]}},
    "objective": {"steps": 20, "eval_every": 10, "model": "mlp", "width": 16},
    "solvers": {"sgd": {"lr": {"loguniform": [0.01, 0.5]}}, "adam": {}},
    "search": {"kind": "random", "trials_per_solver": 2, "seed": 0},
    "seeds": [0],
    "analyses": ["reproduce", "id_ood_table", "id_ood_scatter", "optimizer_ood_best"],
}


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """The site of a tiny real run (8 trials, 20 steps, in this process's CLI)."""
    folder = tmp_path_factory.mktemp("site")
    study = folder / "sitetiny.yml"
    study.write_text(yaml.safe_dump(SITE_STUDY))
    store_dir, out = folder / "store", folder / "report"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    run = [str(SHIFTBENCH), "run", str(study), "--store", str(store_dir), "--workers", "0"]
    subprocess.run([*run, "--quiet"], check=True, env=env)
    report = [str(SHIFTBENCH), "report", str(study), "--store", str(store_dir), "--out"]
    done = subprocess.run(
        [*report, str(out), "--html"], check=True, env=env, capture_output=True, text=True
    )
    assert re.search(
        rf"site written to {out / 'index.html'} \(3 pages, 8 trials, [0-9.]+ MB; "
        rf"scripts [0-9.]+ MB in {out / 'assets'}\)",
        done.stdout,
    )
    return out, store.final_rows(store.read(store_dir, "sitetiny"))


def site_records(out: Path) -> dict[str, dict]:
    """Every trial's record in the site's data files, by trial id."""
    records = {}
    for shard in (out / "trials").glob("*.js"):
        call = re.fullmatch(r"shiftbenchTrials\((.*)\);\n", shard.read_text(), re.DOTALL)
        shard_records = json.loads(call.group(1))
        assert all(trial_id.startswith(shard.stem) for trial_id in shard_records)
        records |= shard_records
    return records


def _chromium() -> str | None:
    return os.environ.get("SHIFTBENCH_CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )


@pytest.fixture
def browser():
    """A headless Chromium from the system; skipped when there is none, unless
    SHIFTBENCH_REQUIRE_BROWSER is set (as in CI)."""
    executable = _chromium()
    if executable is None:
        if os.environ.get("SHIFTBENCH_REQUIRE_BROWSER"):
            pytest.fail("no chromium found and SHIFTBENCH_REQUIRE_BROWSER is set")
        pytest.skip("no chromium on this machine (`apt-get install chromium`)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable)
        yield chromium
        chromium.close()


def watched_page(browser):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    problems, fetched = [], []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: fetched.append(r.url))
    return page, problems, fetched
