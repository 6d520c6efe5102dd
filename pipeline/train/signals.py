"""SIGTERM turns into "save a checkpoint and exit non-zero", on every rank, within a step.

Airflow sends SIGTERM when a task times out or is marked failed, and Kubernetes does the same
before it evicts a pod. The handler only sets a flag; the training loop reads it after each step,
agrees on it across ranks, saves, and exits with 128 + the signal number. (NVIDIA's runner sleeps
an hour in its handler instead, which Airflow answers with SIGKILL and a lost checkpoint.)
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class StopRequest:
    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.signum: int | None = None
        self._signals = signals
        self._previous: dict[signal.Signals, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def __enter__(self) -> StopRequest:
        # Signal handlers can only be installed from the main thread (tests may run the loop elsewhere).
        if threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
