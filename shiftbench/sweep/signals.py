"""Signals during a run: SIGTERM interrupts like Ctrl-C (and is put back after ``ray.init``),
and an alarm stops an in-process trial that overruns ``timeout_s``."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a scheduler's stop) interrupts the run like Ctrl-C, so finished rows land."""
    if not in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def sigterm_kept() -> Iterator[None]:
    """Put back a run's SIGTERM handler after ``ray.init``, which replaces it twice: with a
    Python handler that stops the cluster and exits 1, and with its core worker's C++ failure
    handler, which aborts the driver (exit 134) before the finished rows land."""
    ours = in_main_thread() and signal.getsignal(signal.SIGTERM) is interrupt
    try:
        yield
    finally:
        if ours:
            signal.signal(signal.SIGTERM, interrupt)


class TrialTimeout(BaseException):
    """An in-process trial overran ``timeout_s`` (a BaseException, so that the runner's
    error handling does not turn it into a ``failed`` row)."""


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TrialTimeout` in this thread after ``seconds`` (main thread only)."""
    if not seconds or not in_main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TrialTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
