"""One driver per study and store: an advisory ``flock`` on ``study=<name>/.lock``.

The kernel releases the lock when its holder dies, so a lock left by a killed
driver is never stale; the file's content says who holds it, for the error
message a second driver prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from shiftbench.store import study_dir


class StudyLocked(RuntimeError):
    """Another driver is running this study on this store."""


class StudyLock:
    """Context manager holding the study's lock for the duration of a run."""

    def __init__(self, store_dir: Path, study: str) -> None:
        self.path = study_dir(store_dir, study) / ".lock"
        self.handle = None

    def __enter__(self) -> StudyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held open while locked)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "{}"
            handle.close()
            info = json.loads(holder) if holder.startswith("{") else {}
            raise StudyLocked(
                f"{self.path}: study is being run by pid {info.get('pid', '?')} on "
                f"{info.get('host', '?')} since {info.get('since', '?')}; wait for it or "
                "stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": datetime.now(UTC).isoformat(timespec="seconds")}))
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
