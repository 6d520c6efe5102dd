"""Run a command, and when it fails say why: its exit code and the last lines of its own stderr, redacted.

`dvc pull` that fails says its reason on stderr ("failed to pull data from the cloud - ..."); an
error that only says "exit 1" sends the operator to rerun it by hand. The stderr is read as it is
written and only its last `TAIL_LINES` lines (each cut at `MAX_LINE` bytes) are kept, so a chatty
command cannot fill memory; credentials the environment knows are removed (`redact`) before the
lines reach an error message, and through it a task log.
"""

from __future__ import annotations

import subprocess
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from pipeline.redact import redact

TAIL_LINES = 20
MAX_LINE = 4096  # bytes kept of one line: a progress bar redrawn with \r has no newline for megabytes


class CommandError(RuntimeError):
    """A command failed; the message is one line: the command, where, its exit code and its last stderr lines."""

    def __init__(self, args: Sequence[str], cwd: str | Path | None, code: int, tail: Sequence[str]) -> None:
        self.returncode, self.tail = code, [redact(line) for line in tail]
        where = f" in {cwd}" if cwd else ""
        reason = " | ".join(self.tail)
        super().__init__(redact(f"{describe(args)}{where}: exit {code}" + (f": {reason}" if reason else "")))


def describe(args: Sequence[str]) -> str:
    """The command on one line, with the program's name, not the path of the venv it came from."""
    return " ".join([Path(str(args[0])).name, *map(str, args[1:])]).replace("\n", "\\n")


class StderrTail:
    """Drains a pipe in a thread, keeping its last lines; `echo` also gets every byte (a task log's stream)."""

    def __init__(self, pipe: IO[bytes], lines: int = TAIL_LINES, echo: IO[bytes] | None = None) -> None:
        self._pipe, self._echo = pipe, echo
        self._lines: deque[bytes] = deque(maxlen=lines)
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        partial = False  # the previous chunk ended mid-line: this one continues it, and is not kept again
        while chunk := self._pipe.readline(MAX_LINE):
            if self._echo is not None:
                self._echo.write(chunk)
                self._echo.flush()
            if not partial:
                self._lines.append(chunk)
            partial = not chunk.endswith((b"\n", b"\r"))
        self._pipe.close()

    def lines(self, timeout: float | None = None) -> list[str]:
        """The kept lines, blank ones dropped; waits (at most `timeout`) for the pipe's end."""
        self._thread.join(timeout)
        text = (chunk.decode(errors="replace") for chunk in list(self._lines))
        return [line.strip() for chunk in text for line in chunk.split("\r") if line.strip()]


def run(args: Sequence[str], cwd: str | Path | None = None, env: Mapping[str, str] | None = None,
        *, tail: int = TAIL_LINES) -> str:
    """The command's stdout; CommandError (its exit code and last stderr lines) when it exits non-zero."""
    try:
        proc = subprocess.Popen(list(map(str, args)), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:  # no such program, or cwd: the same one-line error
        raise CommandError(args, cwd, 127, [f"{type(exc).__name__}: {exc.strerror or exc}"]) from None
    with proc:
        stderr = StderrTail(proc.stderr, tail)  # type: ignore[arg-type]
        stdout = proc.stdout.read()  # type: ignore[union-attr]
        code = proc.wait()
        lines = stderr.lines()
    if code != 0:
        raise CommandError(args, cwd, code, lines)
    return stdout.decode(errors="replace")

