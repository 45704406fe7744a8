"""One driver per study and store: an advisory ``flock`` on ``study=<name>/.lock``.

The kernel releases the lock when its holder dies, so a lock left by a killed
driver is never stale; the file's content says who holds it, for the error
message a second driver prints. The lock is on the file's inode: a driver that
locked a file someone then deleted or replaced tries again on the new one, so
two drivers never both believe they hold the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from shiftbench.store.ledger import study_dir


class StudyLocked(RuntimeError):
    """Another driver is running this study on this store."""


class StudyLock:
    """Context manager holding the study's lock for the duration of a run."""

    def __init__(self, store_dir: str | Path, study: str) -> None:
        self.path = study_dir(store_dir, study) / ".lock"
        self.handle: IO[str] | None = None

    def __enter__(self) -> StudyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while self.handle is None:
            handle = open(self.path, "a+")  # held open while locked
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read()
                handle.close()
                raise StudyLocked(self._message(holder)) from None
            if self._same_file(handle):
                self.handle = handle
            else:  # the file was replaced between our open and our lock
                handle.close()
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        )
        self.handle.flush()
        return self

    def _same_file(self, handle: IO[str]) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            return False

    def _message(self, holder: str) -> str:
        try:
            info = json.loads(holder)
        except ValueError:
            info = {}
        if not isinstance(info, dict):
            info = {}
        return (
            f"{self.path}: study is being run by pid {info.get('pid', '?')} on "
            f"{info.get('host', '?')} since {info.get('since', '?')}; wait for it to "
            "finish or stop it, then run again"
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
