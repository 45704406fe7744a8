"""Connecting to Ray: start an embedded local cluster or join one (``start_ray``), with the
token and runtime environment a remote cluster needs, and one clear line
(:class:`ClusterError`) when it cannot be joined.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from shiftbench import faults
from shiftbench.plugins.files import benchmark_root
from shiftbench.sweep import cluster
from shiftbench.sweep.signals import sigterm_kept

LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Set by Ray's job supervisor for a job's entrypoint (`ray job submit`, a KubeRay RayJob): the
# job's config, whose runtime_env ray.init merges with the driver's (ray/_private/worker.py,
# init; ray/dashboard/modules/job/job_supervisor.py, _get_driver_env_vars).
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_SETTINGS = "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"


class ClusterError(RuntimeError):
    """The Ray cluster cannot be joined (one line saying what to set)."""


def start_ray(workers: int | None, address: str | None) -> str | None:
    """Start an embedded local cluster (bound to 127.0.0.1, no dashboard), or join ``address``;
    without one, join the local cluster of ``shiftbench cluster start`` while it is up (its
    address is returned then).

    Ray resolves a node address of 127.0.0.1 to the machine's external address and binds its
    servers there unless its single-machine mode is on (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
    read when Ray is imported), so the embedded cluster turns that mode on.

    An unset (or empty) ``RAY_AUTH_MODE`` is ``disabled`` for the embedded cluster; to join
    one it is ``token`` when a token is at hand, as ``ray start`` decides for the clusters it
    starts (ray/_private/authentication/authentication_token_setup.py,
    maybe_enable_token_auth_if_token_available), else ``disabled``.
    """
    if not os.environ.get(AUTH_MODE_ENV):
        os.environ[AUTH_MODE_ENV] = "token" if address and _token_source() else "disabled"
    if not address:
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        return None
    local = None if address else cluster.running()
    with sigterm_kept():
        if address:
            _join(address)
            return None
        if os.environ[LOCAL_ONLY_ENV] == "0":  # Ray may have been imported before the variable
            ray_constants.ENABLE_RAY_CLUSTER = False
        if local:  # same machine: the workers load the driver's files
            runtime_env = {"env_vars": {"SHIFTBENCH_ROOT": str(benchmark_root())}}
            ray.init(
                address=local,
                runtime_env=runtime_env,
                log_to_driver=False,
                logging_level="ERROR",
            )
            return local
        ray.init(
            address="local",  # a new cluster, even where `ray start` left one running
            num_cpus=workers or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            _node_ip_address="127.0.0.1",
        )
    return None


def _join(address: str) -> None:
    """Connect to the cluster at ``address``; a refused token or mode, or no cluster there,
    is a :class:`ClusterError` (Ray retries for about 20 s, then raises a bare
    ``ConnectionError``)."""
    import ray
    from ray.exceptions import RayError

    host, _, port = address.rpartition(":")
    if host and port.isdigit():  # HOST:PORT; Ray would wait many minutes for nothing there
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as exc:
            raise ClusterError(_join_failure(address, str(exc))) from None
    try:
        ray.init(address=address, runtime_env=_runtime_env(), log_to_driver=False)
    except (ConnectionError, RayError) as exc:
        raise ClusterError(_join_failure(address, f"{exc} {exc.__cause__}")) from None


def _join_failure(address: str, error: str) -> str:
    """What to set, given the error text of a failed connection to ``address``."""
    mode, source = os.environ.get(AUTH_MODE_ENV), _token_source()
    if "Authentication" not in error:
        return (
            f"no Ray cluster answers at {address} ({error.strip()}): check the address and "
            f"that the cluster is up (ray status --address {address})"
        )
    if mode != "token":
        return (
            f"the Ray cluster at {address} requires a token and this driver has "
            f"{AUTH_MODE_ENV}={mode}: export {AUTH_MODE_ENV}=token and the cluster's token in "
            f"{TOKEN_SETTINGS}"
        )
    if source is None:
        return f"{AUTH_MODE_ENV}=token but no token: set the cluster's token in {TOKEN_SETTINGS}"
    return (
        f"the Ray cluster at {address} refused this driver's token (from {source}): set the "
        f"cluster's token in {TOKEN_SETTINGS} (the first one set is used), or "
        f"{AUTH_MODE_ENV}=disabled if the cluster runs without tokens"
    )


def _token_source() -> str | None:
    """Where Ray reads this process's cluster token from, in Ray's order, or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH={path}"
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def _runtime_env() -> dict[str, Any] | None:
    """Ship the benchmark folder to a remote cluster's workers (results and data stay).

    Inside a Ray job the job's runtime_env already ships the code (the driver runs in its
    working_dir) and is every worker's: ray.init refuses a second ``working_dir`` or
    ``SHIFTBENCH_ROOT``, so the driver adds none."""
    if JOB_CONFIG_ENV in os.environ:
        return None
    root = benchmark_root()
    return {
        "working_dir": str(root),
        "excludes": ["results/", "data/", ".venv/", ".git/", "*.parquet", "*_cache/"],
        "env_vars": {"SHIFTBENCH_ROOT": ".", **faults.worker_env()},
    }
