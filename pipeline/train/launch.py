"""`rn50 train --np N [--hosts ...]`: start N ranks under horovodrun, and pass a SIGTERM on to all.

horovodrun starts the workers in process groups of their own, so a SIGTERM sent to the launcher
(Airflow's timeout) would not reach them, and their checkpoints would be lost. The launcher forwards
the signal to every process below it, each rank saves, and the launcher exits 128 + the signal's number.

horovodrun hands its whole environment to every rank as `env K=V ...` on the command line it runs
(over ssh on other hosts), where anyone on those hosts can read it in `ps`. So horovodrun gets only
what the ranks need (`rank_environment`), never the Airflow worker's credentials, and the ranks run
only on hosts the deployment allows (`check_hosts`), not on whatever a run's parameters name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from pipeline import settings
from pipeline.contracts import exit_codes

LOCALHOST = "localhost"  # always allowed: training on this machine alone
ALLOWED_HOSTS_VAR = settings.ALLOWED_HOSTS.name  # the deployment's other hosts, comma-separated
# A host name or IPv4 address, as ssh and horovodrun's -H take them: nothing a shell would read, and no
# leading '-' that ssh would take for an option.
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# The ranks' environment: what training needs, by name or prefix (paths, locale, TensorFlow/XLA, CUDA,
# NCCL, Horovod and thread settings, RN50_*); the ssh agent's socket is for horovodrun's own ssh.
RANK_ENV_NAMES = frozenset({"PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ",
                            "TMPDIR", "SSH_AUTH_SOCK"})
RANK_ENV_PREFIXES = ("RN50_", "TF_", "XLA_", "CUDA_", "NVIDIA_", "NCCL_", "HOROVOD_", "OMP_", "KMP_", "MKL_")
# Never, even under those prefixes: a name that says it holds a secret, or a URL with credentials in it.
_SECRET_NAME = re.compile(r"SECRET|PASSW|TOKEN|KEY|CREDENTIAL|DSN|_CONN", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"://[^/@\s]+@")


def rank_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The part of `environ` that horovodrun may pass on to the ranks, on this host and on others."""
    return {name: value for name, value in environ.items()
            if (name in RANK_ENV_NAMES or name.startswith(RANK_ENV_PREFIXES))
            and not _SECRET_NAME.search(name) and not _URL_CREDENTIALS.search(value)}


def host_name(name: str, where: str) -> str:
    """`name` if it is a host name; else a one-line error naming it and `where` it came from."""
    if not _HOST_NAME.fullmatch(name):
        raise ValueError(f"{where}: {name!r} is not a host name (a letter or digit, then letters, digits, '.-_')")
    return name


def parse_hosts(text: str) -> list[tuple[str, int]]:
    """'h1:4,h2:4' -> [('h1', 4), ('h2', 4)]; a host without ':slots' gets one slot."""
    hosts = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, slots = item.partition(":")
        if not name:
            raise ValueError(f"--hosts: empty host name in {text!r}")
        host_name(name, "--hosts")
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


def allowed_hosts(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The hosts besides localhost that a run may train on: a deployment setting, not a run's."""
    return list(settings.ALLOWED_HOSTS.get(environ))


def check_hosts(text: str, environ: Mapping[str, str] = os.environ) -> list[tuple[str, int]]:
    """parse_hosts, refusing any host but localhost and the deployment's RN50_ALLOWED_HOSTS."""
    hosts = parse_hosts(text)
    allowed = allowed_hosts(environ)
    permitted = {LOCALHOST, *(name.lower() for name in allowed)}  # host names ignore case
    for name, _ in hosts:
        if name.lower() not in permitted:
            setting = f"={','.join(allowed)}" if allowed else " is not set: localhost only"
            raise ValueError(f"--hosts: {name} is not an allowed host ({ALLOWED_HOSTS_VAR}{setting})")
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
        hosts.append(f"{host_name(name, f'hostfile line {number}')}:{slots}")
    if not hosts:
        raise ValueError("hostfile lists no hosts")
    return ",".join(hosts)


def horovodrun_command(np: int, hosts: str | None, rank_command: Sequence[str],
                       environ: Mapping[str, str] = os.environ) -> list[str]:
    """The horovodrun command line that runs rank_command (`python -m pipeline train ...`) on every rank."""
    host_list = check_hosts(hosts, environ) if hosts else [(LOCALHOST, np)]
    slots = sum(count for _, count in host_list)
    if np > slots:
        raise ValueError(f"--np {np} is more than the {slots} slots in --hosts {hosts}")
    runner = Path(sys.executable).parent / "horovodrun"
    exe = str(runner) if runner.exists() else shutil.which("horovodrun")
    if exe is None:
        raise FileNotFoundError("horovodrun is not installed; run `make setup`, or train with --np 1")
    spec = ",".join(f"{name}:{count}" for name, count in host_list)
    return [exe, "-np", str(np), "-H", spec, "--gloo", *rank_command]


def is_rank(process, marker: Sequence[str] = ("-m", "pipeline", "train")) -> bool:
    """A Python process running the worker command (horovodrun's own command line holds it too)."""
    try:
        cmdline, name = process.cmdline(), process.name()
    except Exception:  # gone, or not ours to read
        return False
    return name.startswith("python") and any(cmdline[i : i + len(marker)] == list(marker) for i in range(len(cmdline)))


def run_ranks(command: Sequence[str], marker: Sequence[str] = ("-m", "pipeline", "train")) -> int:
    """Run horovodrun with the ranks' environment; on SIGTERM/SIGINT pass the signal to the ranks only, then wait.

    Only the ranks get it: the shells horovodrun puts between itself and them would die of it at
    once, and horovodrun would then kill the ranks before they finish saving. Once the ranks have
    saved and exited, the launcher exits 128 + signum, whatever horovodrun makes of it. Any other failure
    of horovodrun is RETRY (exit_codes): it cannot say which rank failed how.
    """
    import psutil

    proc = subprocess.Popen(list(command), env=rank_environment())
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
    if code == 0:
        return exit_codes.OK
    # horovodrun ends with 1 (its own uncaught "one or more processes exited with non-zero status") whichever
    # rank failed and how: a rank's refusal (2), a record it cannot read (1), a crash or a lost host look the
    # same. Read as FAILED, that would stop Airflow's retries for a failure a retry may pass, so it is RETRY;
    # the ranks' own lines above say what happened.
    print(f"rn50 train: horovodrun exited with {code if code >= 0 else 128 - code}", file=sys.stderr)
    return exit_codes.RETRY
