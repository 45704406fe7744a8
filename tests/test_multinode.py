"""Multi-node: two Ray nodes started on this machine with ``ray start`` (a head and a worker
node, token authentication on, as on a real cluster), and ``shiftbench run --address``
against them: the repository reaches the workers through Ray's runtime environment, trials
run on both nodes, and the driver alone writes the ledger. The head declares a GPU, so
``gpus: auto`` takes its packing path (a first trial alone, then the rest)."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_STUDY, Driver, assert_exactly_once, wait_for

from shiftbench.plugins.files import benchmark_root
from shiftbench.spec.study import load_study
from shiftbench.store import artifacts, checkpoint
from shiftbench.store import ledger as store

RAY = Path(sys.executable).parent / "ray"
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class Nodes:
    """``ray start --block`` processes, tagged with a token of their own so that ``stop``
    reaps everything they started."""

    def __init__(self, driver: Driver, token: str) -> None:
        # tagged apart from the driver: each driver run reaps what it tagged, not the nodes
        self.driver, self.token = Driver(driver.cwd), token
        self.procs: list[subprocess.Popen] = []
        self.log = driver.cwd / "nodes.log"

    def env(self) -> dict[str, str]:
        env = self.driver.env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)
        env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # set by the embedded cluster
        return env

    def start(self, *args: str) -> None:
        with self.log.open("a") as log:
            self.procs.append(
                subprocess.Popen(
                    [str(RAY), "start", "--block", "--num-cpus", "1", *args],
                    cwd=self.driver.cwd,
                    env=self.env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def head_address(self, port: int) -> str:
        pattern = re.compile(rf"--address='([0-9.]+:{port})'")
        wait_for(lambda: pattern.search(self.log.read_text()), "the head node")
        return pattern.search(self.log.read_text()).group(1)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.driver.reap()


@pytest.fixture
def nodes(driver: Driver) -> Iterator[tuple[Nodes, str]]:
    cluster = Nodes(driver, secrets.token_hex(16))
    port = free_port()
    # the head declares one (logical) GPU, so that GPU requests can be placed on it
    cluster.start("--head", "--port", str(port), "--num-gpus", "1", "--include-dashboard", "false")
    try:
        address = cluster.head_address(port)
        cluster.start("--address", address)
        yield cluster, address
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Nodes, str]]:
    """A one-node cluster (token authentication on) for the tests that need no second node."""
    cluster = Nodes(Driver(tmp_path_factory.mktemp("head")), secrets.token_hex(16))
    port = free_port()
    cluster.start("--head", "--port", str(port), "--include-dashboard", "false")
    try:
        yield cluster, cluster.head_address(port)
    finally:
        cluster.stop()


def alive_nodes(address: str, env: dict[str, str]) -> int:
    out = subprocess.run(
        [str(RAY), "status", "--address", address], env=env, capture_output=True, text=True
    ).stdout
    return len(re.findall(r"^ 1 node_", out, flags=re.M))


def test_run_against_a_two_node_cluster(nodes, driver, tmp_path):
    cluster, address = nodes
    wait_for(lambda: alive_nodes(address, cluster.env()) == 2, "two nodes")
    spec = {
        **TINY_STUDY,
        "name": "multinode",
        "search": {"kind": "random", "trials_per_solver": 4, "seed": 0},
        "ensemble": "off",
    }
    path = tmp_path / "multinode.yml"
    path.write_text(yaml.safe_dump(spec))
    store_dir = tmp_path / "store"
    args = ["run", str(path), "--store", str(store_dir), "--address", address, "--quiet"]
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token}

    code, out = driver.run(*args, **env)
    assert code == 0, out
    assert "ran 8 trials" in out and "8 done" in out, out
    study = load_study(path)
    assert_exactly_once(study, store_dir, {"done"})
    ledger = store.read(store_dir, "multinode")
    per_node = ledger.groupby("ray_node")["trial_id"].nunique()
    assert len(per_node) == 2 and per_node.sum() == 8, per_node
    # rerunning against the cluster finds everything done
    code, out = driver.run(*args, **env)
    assert code == 0 and "0 to run" in out, out

    # gpus: auto on a cluster with a GPU: the first trial runs alone on a whole GPU before
    # any other starts; here its worker sees no CUDA device, so each trial gets a whole GPU
    packed = tmp_path / "packed.yml"
    packed.write_text(yaml.safe_dump({**spec, "name": "packed", "resources": {"gpus": "auto"}}))
    code, out = driver.run(
        "run", str(packed), "--store", str(store_dir), "--address", address, "--quiet", **env
    )
    assert code == 0 and "8 done" in out, out
    assert "no GPU memory measured; one trial per GPU" in out and "has no GPU" not in out
    spans = (
        store.read(store_dir, "packed")
        .groupby("trial_id")
        .agg(start=("start_time", "min"), end=("end_time", "max"), node=("ray_node", "first"))
        .sort_values("start")
    )
    assert spans["end"].iloc[0] <= spans["start"].iloc[1:].min()
    assert spans["node"].nunique() == 1  # only the head has a GPU


def test_models_and_checkpoints_written_on_both_nodes_land_in_the_store(nodes, driver, tmp_path):
    """Each worker writes its trials' artifacts itself (through fsspec, into the store both
    nodes see); the driver finds them, ``load_model`` loads each, and the training states
    saved on the way (``checkpoint_every``) are gone once the rows landed."""
    cluster, address = nodes
    wait_for(lambda: alive_nodes(address, cluster.env()) == 2, "two nodes")
    spec = {
        **TINY_STUDY,
        "name": "models",
        "search": {"kind": "random", "trials_per_solver": 4, "seed": 0},
        "measures": ["l2"],
        "checkpoint_every": 5,
    }
    path = tmp_path / "models.yml"
    path.write_text(yaml.safe_dump(spec))
    store_dir = tmp_path / "store"
    code, out = driver.run(
        *("run", str(path), "--store", str(store_dir), "--address", address, "--quiet"),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=cluster.token,
    )
    assert code == 0 and "8 done" in out, out
    ledger = store.final_rows(store.read(store_dir, "models"))
    last = ledger[ledger["measure.l2"].notna()].set_index("trial_id")
    assert last["ray_node"].nunique() == 2 and len(last) == 8, last["ray_node"]
    assert sorted(artifacts.sizes(store_dir, "models")) == sorted(last.index)
    for trial_id, row in last.iterrows():
        assert list(artifacts.trial_paths(store_dir, "models", trial_id)) == [0]
        model = artifacts.load_model(store_dir, "models", trial_id)
        weights = [p.detach().double() for p in model.parameters() if p.dim() > 1]
        l2 = float(torch.sqrt(sum((w**2).sum() for w in weights)))
        assert l2 == pytest.approx(row["measure.l2"], rel=1e-5), trial_id
        assert row["resumed_from_step"] == 0
    assert not list(store_dir.glob(f"study=models/{artifacts.FOLDER}/*/{checkpoint.FOLDER}"))


def test_run_as_the_entrypoint_of_deploy_rayjob(head, tmp_path):
    """deploy/rayjob.yaml's entrypoint, started as Ray's job supervisor starts it
    (ray/dashboard/modules/job/job_supervisor.py): in the job's working_dir, with the job's
    env_vars and with the job's config, runtime_env included, in RAY_JOB_CONFIG_JSON_ENV_VAR,
    which the driver's ray.init merges with its own (a second working_dir is refused)."""
    cluster, address = head
    rayjob = yaml.safe_load((benchmark_root() / "deploy" / "rayjob.yaml").read_text())["spec"]
    job_env = yaml.safe_load(rayjob["runtimeEnvYAML"])
    # the repository its working_dir names, from this checkout (Ray unpacks an https archive
    # without its top-level folder: the same tree as a local folder)
    repo = tmp_path / "shiftbench-main"
    shutil.copytree(
        benchmark_root(),
        repo,
        ignore=shutil.ignore_patterns(".venv", ".git", "results", "data", "*cache*"),
    )
    job_env["working_dir"] = str(repo)
    job_env["env_vars"]["SHIFTBENCH_DATA"] = str(tmp_path / "data")
    study = tmp_path / "job.yml"
    spec = {**TINY_STUDY, "name": "job", "seeds": [0]}
    study.write_text(
        yaml.safe_dump({**spec, "search": {**spec["search"], "trials_per_solver": 1}})
    )
    store_dir = tmp_path / "store"
    entrypoint = rayjob["entrypoint"].split()
    assert entrypoint[:2] == ["shiftbench", "run"]
    args = [
        {"benchmarks/quickstart.yml": str(study), "/results": str(store_dir)}.get(arg, arg)
        for arg in entrypoint[1:]
    ]
    job = Driver(repo)  # the supervisor runs the entrypoint in the unpacked working_dir
    try:
        code, out = job.run(
            *args,
            RAY_ADDRESS=address,
            RAY_JOB_CONFIG_JSON_ENV_VAR=json.dumps({"runtime_env": job_env, "metadata": {}}),
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=cluster.token,
            **job_env["env_vars"],
        )
    finally:
        job.reap()
    assert code == 0 and "1 done" in out, out
    assert_exactly_once(load_study(study), store_dir, {"done"})
    assert store.read(store_dir, "job")["ray_node"].notna().all()


def test_a_driver_that_the_cluster_refuses_says_what_to_set(head, driver, tmp_path):
    """A wrong token, and a driver without token mode, each end in one line saying what to
    set; with RAY_AUTH_MODE unset, the token that `ray get-auth-token --generate` wrote to
    ~/.ray/auth_token puts the driver in token mode, as it does `ray start`."""
    cluster, address = head
    spec = {**TINY_STUDY, "name": "auth", "seeds": [0]}
    path = tmp_path / "auth.yml"
    path.write_text(yaml.safe_dump({**spec, "search": {**spec["search"], "trials_per_solver": 1}}))
    args = ["run", str(path), "--store", str(tmp_path / "store"), "--address", address]
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    unset = {"RAY_AUTH_MODE": "", "RAY_AUTH_TOKEN": "", "HOME": str(home)}
    refused = {
        "the Ray cluster at {} refused this driver's token (from RAY_AUTH_TOKEN): set the "
        "cluster's token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (the first "
        "one set is used), or RAY_AUTH_MODE=disabled if the cluster runs without tokens": {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
        },
        "the Ray cluster at {} requires a token and this driver has RAY_AUTH_MODE=disabled: "
        "export RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, "
        "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token": unset,
    }
    for message, env in refused.items():
        code, out = driver.run(*args, **env)
        assert code == 1 and "Traceback" not in out, out
        assert out.splitlines()[-1] == "Error: " + message.format(address), out
    (home / ".ray" / "auth_token").write_text(cluster.token)
    code, out = driver.run(*args, "--quiet", **unset)
    assert code == 0 and "1 done" in out, out


def test_a_driver_with_no_cluster_at_its_address_says_so_at_once(driver, tmp_path):
    path = tmp_path / "none.yml"
    path.write_text(yaml.safe_dump(TINY_STUDY))
    address = f"127.0.0.1:{free_port()}"
    code, out = driver.run(
        "run", str(path), "--store", str(tmp_path / "store"), "--address", address
    )
    assert code == 1, out
    assert out.splitlines()[-1].startswith(f"Error: no Ray cluster answers at {address} ("), out
