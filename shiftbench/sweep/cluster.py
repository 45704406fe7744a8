"""A persistent local Ray cluster with warm workers: ``shiftbench cluster start|stop|status``.

The embedded cluster that ``shiftbench run`` starts costs its start, its workers' start
(torch imported, data loaded) and its shutdown on every run. ``cluster start`` pays them
once: it starts a Ray head bound to 127.0.0.1 (no dashboard, token authentication off, as
the embedded cluster) and keeps one worker actor per CPU alive in it (detached, so they
outlive the command). ``shiftbench run`` without ``--address`` joins it while it is up and
runs its trials on those warm workers when they run the driver's code (a fingerprint of the
engine and the benchmark folder; workers running older code are replaced) and a trial asks
for one CPU and no GPU; otherwise it starts workers of its own in the cluster. ``cluster
stop`` stops the head and everything it started, and nothing else on the machine.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import shiftbench
from shiftbench.plugins.files import KINDS, benchmark_root

DIR_ENV = "SHIFTBENCH_CLUSTER_DIR"
NAMESPACE = "shiftbench"
WARM_PREFIX = "warm-"
START_SECONDS = 120.0


class ClusterCommandError(RuntimeError):
    """A cluster command that cannot be carried out (one line)."""


def state_dir() -> Path:
    """Where the cluster keeps its address, its head's pid and Ray's session files (short:
    Ray's socket paths live under it)."""
    default = Path(tempfile.gettempdir()) / f"shiftbench-{getpass.getuser()}"
    return Path(os.environ.get(DIR_ENV) or default)


def answers(address: str, timeout: float = 2.0) -> bool:
    """Whether something listens at ``HOST:PORT``."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError):
        return False
    return True


def running() -> str | None:
    """The address of the local cluster if it is up."""
    path = state_dir() / "address"
    address = path.read_text().strip() if path.is_file() else ""
    return address if address and answers(address) else None


def code_fingerprint() -> str:
    """The engine's and the benchmark folder's Python files (paths, sizes, modification
    times): a warm worker serves a run only when its fingerprint is the driver's."""
    files = list(Path(shiftbench.__file__).parent.rglob("*.py"))
    try:
        root = benchmark_root()
    except FileNotFoundError:  # a worker without the benchmark folder: its trials will say so
        root = None
    if root is not None:
        files += [root / "objective.py", *(p for k in KINDS for p in (root / k).glob("*.py"))]
    digest = hashlib.sha256()
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def start(workers: int | None = None) -> tuple[str, int]:
    """Start the head and its warm workers; returns the address and the number of workers."""
    if address := running():
        raise ClusterCommandError(f"a local cluster is already running at {address}")
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    n = workers or os.cpu_count() or 1
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    command = [
        str(Path(sys.executable).parent / "ray"),
        *("start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port)),
        *("--num-cpus", str(n), "--include-dashboard", "false", "--disable-usage-stats"),
        *("--temp-dir", str(folder / "ray")),
    ]
    with (folder / "head.log").open("w") as log:
        head = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    (folder / "head.pid").write_text(str(head.pid))
    deadline = time.monotonic() + START_SECONDS
    while not answers(address):
        if head.poll() is not None or time.monotonic() > deadline:
            stop()
            raise ClusterCommandError(f"the Ray head did not start: see {folder / 'head.log'}")
        time.sleep(0.2)
    (folder / "address").write_text(address)
    _warm_up(address, n)
    return address, n


def _warm_up(address: str, n: int) -> None:
    """Start ``n`` detached worker actors (torch imported) in the cluster at ``address``."""
    import ray

    from shiftbench.sweep.connect import start_ray
    from shiftbench.trials.provenance import static_provenance

    start_ray(None, None)  # joins the cluster just started, as a run would
    ray.get([actor.ready.remote() for actor in spawn_warm(n, static_provenance(benchmark_root()))])
    ray.shutdown()


def spawn_warm(n: int, provenance: dict[str, Any]) -> list[Any]:
    """Start ``n`` detached worker actors in the cluster this driver is connected to. They
    hold no CPU while idle (a run keeps as many trials in flight as it has slots), so that
    the workers of a run they cannot serve still fit."""
    from shiftbench.trials.accel import AUTO
    from shiftbench.trials.worker import TrialWorker

    return [
        TrialWorker.options(
            name=f"{WARM_PREFIX}{uuid.uuid4().hex[:12]}",
            namespace=NAMESPACE,
            lifetime="detached",
            num_cpus=0,
        ).remote(provenance, AUTO)
        for _ in range(n)
    ]


def warm_workers() -> list[Any]:
    """The warm worker actors of the cluster this driver is connected to."""
    import ray
    from ray.util import list_named_actors

    names = [
        entry["name"]
        for entry in list_named_actors(all_namespaces=True)
        if entry["namespace"] == NAMESPACE and entry["name"].startswith(WARM_PREFIX)
    ]
    return [ray.get_actor(name, namespace=NAMESPACE) for name in sorted(names)]


def stop() -> bool:
    """Stop the head (``ray start --block`` stops what it started on SIGTERM); returns
    whether one was running."""
    folder = state_dir()
    pid_file = folder / "head.pid"
    pid = int(pid_file.read_text()) if pid_file.is_file() else None
    stopped = pid is not None and _terminate(pid)
    for name in ("address", "head.pid"):
        (folder / name).unlink(missing_ok=True)
    return stopped


def _terminate(pid: int, seconds: float = 30.0) -> bool:
    """SIGTERM ``pid``, then SIGKILL it if it outlives ``seconds``; False if it was gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    return True


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie that no parent reaps has stopped)."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except ProcessLookupError:
        return False
    except OSError:  # no /proc: the signal's answer is all there is
        return True
