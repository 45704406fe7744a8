"""The persistent local cluster (``shiftbench cluster start|stop|status``): runs join it and
take its warm workers (which store the run's models: the sink comes with each run), workers
that run other code are replaced, and ``stop`` leaves no process behind."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import Driver, assert_exactly_once, wait_for

from shiftbench.plugins.files import benchmark_root
from shiftbench.spec.study import load_study
from shiftbench.store import artifacts

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def command(keeper: Driver, *args: str, **env: str) -> tuple[int, str]:
    """A ``shiftbench cluster`` command; what it leaves running (the cluster) stays."""
    proc = keeper.start("cluster", *args, **env)
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def warm_pids(keeper: Driver, env: dict[str, str]) -> set[int]:
    code, out = command(keeper, "status", **env)
    assert code == 0 and "2 warm workers" in out, out
    return {int(pid) for pid in re.findall(r"\d+", out.split("pids")[-1])}


def test_runs_join_the_local_cluster_and_take_its_warm_workers(make_study, driver, tmp_path):
    folder = Path(tempfile.mkdtemp(prefix="sbc-"))  # short: Ray's socket paths live under it
    keeper = Driver(driver.cwd)  # tags the cluster's processes apart from the runs'
    # the cluster starts from another copy of the benchmark: its warm workers run other code
    copy = tmp_path / "copy"
    ignore = shutil.ignore_patterns(".venv", ".git", "results", "*cache*")
    shutil.copytree(benchmark_root(), copy, ignore=ignore)
    env = {"SHIFTBENCH_CLUSTER_DIR": str(folder)}
    path = make_study(keep="final")
    study = load_study(path)
    try:
        code, out = command(keeper, "start", "--workers", "2", SHIFTBENCH_ROOT=str(copy), **env)
        assert code == 0 and "with 2 warm workers" in out, out
        before = warm_pids(keeper, env)
        stores = [tmp_path / "first", tmp_path / "second"]
        code, out = driver.run("run", str(path), "--store", str(stores[0]), "--quiet", **env)
        assert code == 0 and "joined the local cluster at 127.0.0.1:" in out, out
        assert "tiny: 2 warm workers (2 replaced: they ran other code)" in out, out
        replaced = warm_pids(keeper, env)
        assert not replaced & before
        code, out = driver.run("run", str(path), "--store", str(stores[1]), "--quiet", **env)
        assert code == 0 and "tiny: 2 warm workers\n" in out, out
        assert warm_pids(keeper, env) == replaced
        for store_dir in stores:
            assert_exactly_once(study, store_dir, {"done"})
            assert sorted(artifacts.sizes(store_dir, study.name)) == sorted(
                t.trial_id for t in study.trials()
            )
        code, out = command(keeper, "stop", **env)
        assert code == 0 and "local cluster stopped" in out, out
        wait_for(lambda: not keeper.processes(), "the local cluster's processes to stop")
        code, out = command(keeper, "status", **env)
        assert code == 0 and "no local cluster running" in out, out
    finally:
        keeper.reap()
        shutil.rmtree(folder, ignore_errors=True)
