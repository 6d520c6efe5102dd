"""Reading and writing the files stages leave in a run's directories, never through a symlink.

A model directory is shared by the stages of a run (and, on a cluster, by every rank), so whatever can
write into it can plant a link: `metrics.jsonl -> /proc/self/environ` would upload the publishing
worker's environment, and `decision.json -> ~/.bashrc` would have the gate overwrite that file.
So every output is written to a new temporary file beside it and renamed over it (`os.replace`
replaces a symlink itself, never its target, and a reader never sees half a file); appends refuse a
link; and reads for publishing refuse anything that is not a regular file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any, BinaryIO

# O_NONBLOCK: opening a FIFO planted in place of a file must fail or return at once, never wait for a writer.
_NOFOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotRegularFile(ValueError):
    """A path that must be a plain file is a symlink, a directory or a special file."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a special file (FIFO, socket or device)"


def _refuse(path: Path, mode: int) -> NotRegularFile:
    return NotRegularFile(f"{path}: {_kind(mode)}, not a regular file; refusing it")


def regular_file(path: Path, *, below: Path | None = None) -> bool:
    """True when path is a regular file, False when it does not exist; NotRegularFile when it is a
    symlink or special file, or when a directory between `below` and it is a symlink."""
    path = Path(path)
    if below is not None:
        for parent in reversed(path.relative_to(below).parents[:-1]):
            try:
                mode = os.lstat(below / parent).st_mode
            except FileNotFoundError:
                return False
            if stat.S_ISLNK(mode):
                raise _refuse(below / parent, mode)
            if not stat.S_ISDIR(mode):
                return False
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(mode):
        raise _refuse(path, mode)
    return True


def _open_regular(path: Path, flags: int) -> int:
    """os.open that refuses a symlink in path's place and anything but a regular file."""
    try:
        fd = os.open(path, flags | _NOFOLLOW, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink; a FIFO opened for writing with no reader
            raise _refuse(Path(path), os.lstat(path).st_mode) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _refuse(Path(path), mode)
    return fd


def open_regular(path: Path) -> BinaryIO:
    """Open a regular file for reading; a symlink swapped in after a `regular_file` check is refused."""
    return os.fdopen(_open_regular(path, os.O_RDONLY), "rb")


def read_regular(path: Path) -> bytes:
    with open_regular(path) as f:
        return f.read()


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Replace path with data: whole or not at all, and never through a symlink at path."""
    path = Path(path)
    body = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: fails on any name that exists, a symlink planted there included.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def staging_dir(parent: Path, prefix: str) -> Path:
    """A new empty directory in parent, named prefix and 16 random hex digits, made as a plain mkdir makes
    one: mode 0o777 less the umask. A directory built in place of another and renamed over it keeps its
    mode, and tempfile.mkdtemp's 0o700 is not the mode the trainer's model directories get."""
    path = Path(parent) / f"{prefix}{secrets.token_hex(8)}"
    os.mkdir(path, 0o777)  # fails on any name that exists, a planted symlink included
    return path


def write_json(path: Path, value: Any) -> Path:
    return write_atomic(path, json.dumps(value, indent=2) + "\n")


def append_line(path: Path, line: str) -> None:
    """Append one line, in one write so that concurrent appenders never interleave within it."""
    fd = _open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode())
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in chunks (a checkpoint's data file is hundreds of MB)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(read_regular(path))  # a symlink planted in a model directory is refused
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return value
