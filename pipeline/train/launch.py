"""`rn50 train --np N [--hosts ...]`: start N ranks under horovodrun, and pass a SIGTERM on to all.

horovodrun starts the workers in process groups of their own, so a SIGTERM sent to the launcher
(Airflow's timeout) would not reach them, and their checkpoints would be lost. The launcher forwards
the signal to every process below it, each rank saves, and the launcher exits with the ranks' code.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType


def parse_hosts(text: str) -> list[tuple[str, int]]:
    """'h1:4,h2:4' -> [('h1', 4), ('h2', 4)]; a host without ':slots' gets one slot."""
    hosts = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, slots = item.partition(":")
        if not name:
            raise ValueError(f"--hosts: empty host name in {text!r}")
        try:
            count = int(slots) if slots else 1
        except ValueError:
            raise ValueError(f"--hosts: slots must be a number in {item!r}") from None
        if count < 1:
            raise ValueError(f"--hosts: slots must be at least 1 in {item!r}")
        hosts.append((name, count))
    if not hosts:
        raise ValueError(f"--hosts: no hosts in {text!r}")
    return hosts


def parse_hostfile(text: str) -> str:
    """An MPI hostfile ("host slots=G" per line) as horovodrun's -H list "host:G,..."."""
    hosts = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, *options = line.split()
        slots = 1
        for option in options:
            key, _, value = option.partition("=")
            if key == "slots" and value.isdigit():
                slots = int(value)
            elif key != "max_slots":
                raise ValueError(f"hostfile line {number}: {line!r}: expected 'host slots=N'")
        if ":" in name:  # Intel MPI / MPICH style "host:N"
            name, _, count = name.partition(":")
            slots = int(count) if count.isdigit() else slots
        hosts.append(f"{name}:{slots}")
    if not hosts:
        raise ValueError("hostfile lists no hosts")
    return ",".join(hosts)


def horovodrun_command(np: int, hosts: str | None, worker_argv: Sequence[str]) -> list[str]:
    """The horovodrun command line that runs `python -m pipeline <worker_argv>` on every rank."""
    host_list = parse_hosts(hosts) if hosts else [("localhost", np)]
    slots = sum(count for _, count in host_list)
    if np > slots:
        raise ValueError(f"--np {np} is more than the {slots} slots in --hosts {hosts}")
    runner = Path(sys.executable).parent / "horovodrun"
    exe = str(runner) if runner.exists() else shutil.which("horovodrun")
    if exe is None:
        raise FileNotFoundError("horovodrun is not installed; run `make setup`, or train with --np 1")
    spec = ",".join(f"{name}:{count}" for name, count in host_list)
    return [exe, "-np", str(np), "-H", spec, "--gloo", sys.executable, "-m", "pipeline", *worker_argv]


def is_rank(process, marker: Sequence[str] = ("-m", "pipeline", "train")) -> bool:
    """A Python process running the worker command (horovodrun's own command line holds it too)."""
    try:
        cmdline, name = process.cmdline(), process.name()
    except Exception:  # gone, or not ours to read
        return False
    return name.startswith("python") and any(cmdline[i : i + len(marker)] == list(marker) for i in range(len(cmdline)))


def run_ranks(command: Sequence[str], marker: Sequence[str] = ("-m", "pipeline", "train")) -> int:
    """Run horovodrun; on SIGTERM/SIGINT pass the signal to the rank processes only, then wait.

    Only the ranks get it: the shells horovodrun puts between itself and them would die of it at
    once, and horovodrun would then kill the ranks before they finish saving. Once the ranks have
    saved and exited, the launcher exits 128 + signum, whatever horovodrun makes of it.
    """
    import psutil

    proc = subprocess.Popen(list(command))
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for p in descendants:
            if is_rank(p, marker):
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        print(f"rn50 train: stopped by signal {received[0]}; the ranks saved a checkpoint", file=sys.stderr)
        return 128 + received[0]
    return code if code >= 0 else 128 - code
