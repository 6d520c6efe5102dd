"""A real sshd on loopback addresses, so horovodrun starts ranks over ssh as on a cluster.

The daemon listens on 127.0.0.2 and 127.0.0.3 (Linux routes all of 127/8 to `lo`, but only 127.0.0.1
is an address of an interface, so horovodrun treats the other two as remote hosts and ssh's into
them). Keys are throwaway ones made here; a ForceCommand wrapper writes down every command sshd is
asked to run (and on which address) before running it, which is what a remote host sees of a launch.

horovodrun takes its ssh options from the ssh client's configuration, as a deployment's
~/.ssh/config would give them; `bin/ssh` here is the real client with `-F` pointing at a config of
our own (port, key, no known_hosts writes), so nothing in the user's ~/.ssh is read or changed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support import free_port

SSHD = "/usr/sbin/sshd"
ADDRESSES = ("127.0.0.2", "127.0.0.3")

FORCE_COMMAND = """#!/bin/sh
# Record what this session was asked to run, and where, then run it as sshd would have.
n="{sessions}/$$"
printf '%s' "$SSH_ORIGINAL_COMMAND" > "$n.command"
printf '%s' "$SSH_CONNECTION" > "$n.connection"
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
"""


@dataclass
class Session:
    command: str
    server_address: str  # the address the client connected to (the "host")


@dataclass
class LoopbackSshd:
    port: int
    bin_dir: Path  # put first on PATH: its `ssh` uses our config
    sessions_dir: Path

    def sessions(self) -> list[Session]:
        found = []
        for command in sorted(self.sessions_dir.glob("*.command")):
            connection = command.with_suffix(".connection").read_text().split()
            found.append(Session(command.read_text(), connection[2]))
        return found


def _listening(address: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
        return True
    return False


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@contextlib.contextmanager
def loopback_sshd(root: Path, attempts: int = 3) -> Iterator[LoopbackSshd]:
    """sshd on ADDRESSES (one free port), accepting a throwaway key for the current user."""
    root.mkdir(parents=True, exist_ok=True)
    user = pwd.getpwuid(os.getuid()).pw_name
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    sessions = root / "sessions"
    sessions.mkdir()
    force = _write(root / "force_command.sh", FORCE_COMMAND.format(sessions=sessions), 0o755)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    if os.getuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory (the service makes it)
    for _ in range(attempts):  # another process may take the free port before sshd binds it
        port = free_port(ADDRESSES[0])
        listen = "".join(f"ListenAddress {address}:{port}\n" for address in ADDRESSES)
        config = _write(root / "sshd_config", f"""{listen}HostKey {root / 'host_key'}
AuthorizedKeysFile {root / 'user_key.pub'}
PidFile {root / 'sshd.pid'}
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
ForceCommand {force}
LogLevel ERROR
""")
        client = _write(root / "ssh_config", f"""Host {' '.join(ADDRESSES)}
  Port {port}
  User {user}
  IdentityFile {root / 'user_key'}
  IdentitiesOnly yes
  UserKnownHostsFile /dev/null
  GlobalKnownHostsFile /dev/null
  LogLevel ERROR
""")
        _write(bin_dir / "ssh", f'#!/bin/sh\nexec {shutil.which("ssh")} -F {client} "$@"\n', 0o755)
        with (root / "sshd.log").open("a") as log:
            daemon = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while daemon.poll() is None and time.monotonic() < deadline:
            if all(_listening(address, port) for address in ADDRESSES):
                break
            time.sleep(0.1)
        if daemon.poll() is None and all(_listening(address, port) for address in ADDRESSES):
            break
        daemon.kill()
        daemon.wait()
    else:
        raise RuntimeError(f"sshd did not start: {(root / 'sshd.log').read_text()[-2000:]}")
    try:
        yield LoopbackSshd(port=port, bin_dir=bin_dir, sessions_dir=sessions)
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
