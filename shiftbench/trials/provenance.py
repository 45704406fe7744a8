"""Provenance recorded on every ledger row: code version, libraries, device, host."""

from __future__ import annotations

import platform
import socket
import subprocess
from functools import cache
from pathlib import Path

import torch

import shiftbench
from shiftbench.store import schema


@cache
def git_state(root: Path) -> tuple[str, bool]:
    """(commit, dirty) of the repository at ``root``; ("unknown", False) outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return commit, bool(status.strip())


@cache
def static_provenance(root: Path) -> dict[str, object]:
    """What does not change between the trials of one worker."""
    commit, dirty = git_state(root)
    return schema.provenance(
        shiftbench_version=shiftbench.__version__,
        git_commit=commit,
        git_dirty=dirty,
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        hostname=socket.gethostname(),
    )


def device_name(device: torch.device) -> str:
    """A readable device name, e.g. ``cpu`` or ``cuda:NVIDIA H100 80GB HBM3``."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type
