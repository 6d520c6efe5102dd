"""`dvc pull` of data.dvc at a chosen git revision, into a run's own checkout.

The checkout is a `git clone --shared` of the project at that revision, so the revision's data.dvc
and .dvc/config are what DVC reads, and no two runs share DVC's lock. All checkouts use one DVC
cache under the workspace root, so a month's second run, or a retry, copies from the cache instead
of downloading 140 GB again; when the checkout already holds the data with the pinned md5, nothing
is pulled at all. Once the run has published, `remove_data` drops its copy: the cache keeps one.

A run may instead use a directory as it is (`data_dir`); DVC does not version it, so what the run
records is the directory and a fingerprint of its file names and sizes (`data_dir_record`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.command import CommandError
from pipeline.command import run as run_command
from pipeline.contracts.names import DATA_DVC
from pipeline.workspace import RunWorkspace

UNVERSIONED = "unversioned:"  # a dataset version that is no DVC md5: the listing fingerprint follows


class FetchError(RuntimeError):
    """git or dvc failed; the message names the command, its exit code and its last error lines (redacted)."""


@dataclass(frozen=True)
class FetchResult:
    data_dir: Path
    md5: str
    revision: str  # the commit data.dvc was read at
    pulled: bool  # False: the data was already there with the right md5


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    try:
        return run_command(args, cwd, env)
    except CommandError as exc:
        raise FetchError(str(exc)) from exc


def _dvc() -> str:
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def pinned(dvc_file: Path) -> tuple[str, str]:
    """(path, md5) of the single output a .dvc file pins."""
    try:
        outs = yaml.safe_load(dvc_file.read_text())["outs"]
        return outs[0]["path"], outs[0]["md5"]
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError) as exc:
        raise FetchError(f"{dvc_file}: not a DVC pointer with one output ({exc})") from exc


def fetch_data(repo: Path, revision: str, ws: RunWorkspace) -> FetchResult:
    """The data data.dvc pins at `revision` of `repo`, in the run's checkout, through the root's shared cache."""
    repo, checkout, cache_dir = Path(repo).resolve(), ws.checkout, ws.cache
    commit = _run(["git", "rev-parse", "--verify", f"{revision}^{{commit}}"], repo).strip()
    if not (checkout / ".git").exists():
        partial = checkout.with_name(checkout.name + ".partial")
        for leftover in (checkout, partial):  # a clone interrupted half-way: start it again
            ws.remove(leftover)
        _run(["git", "clone", "--quiet", "--shared", "--no-checkout", str(repo), str(partial)], repo)
        _run(["git", "checkout", "--quiet", commit], partial)
        partial.rename(checkout)
    elif _run(["git", "rev-parse", "HEAD"], checkout).strip() != commit:
        raise FetchError(f"{checkout}: this run's checkout is at another revision than {revision} ({commit[:12]})")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    cache_dir.mkdir(parents=True, exist_ok=True)
    _run([_dvc(), "config", "--local", "cache.dir", str(cache_dir)], checkout, env)
    # The cache is shared between checkouts: copy out of it, so a run can never corrupt it through a link.
    _run([_dvc(), "config", "--local", "cache.type", "reflink,copy"], checkout, env)
    path, md5 = pinned(checkout / DATA_DVC)
    data_dir = checkout / path
    if data_dir.is_dir() and "up to date" in _run([_dvc(), "status", DATA_DVC], checkout, env):
        return FetchResult(data_dir, md5, commit, pulled=False)
    # Not --quiet: it silences DVC's errors too, and the reason a pull failed is what the error must say.
    _run([_dvc(), "pull", DATA_DVC], checkout, env)
    return FetchResult(data_dir, md5, commit, pulled=True)


def remove_data(ws: RunWorkspace) -> Path | None:
    """Delete the run's copy of the data data.dvc pins (the shared cache keeps one); return it, or None.

    data.dvc and the rest of the checkout stay, so a rerun of fetch_data copies the data back from the cache.
    """
    dvc_file = ws.checkout / DATA_DVC
    if not dvc_file.is_file():
        return None
    data_dir = ws.checkout / pinned(dvc_file)[0]
    if not (data_dir.exists() or data_dir.is_symlink()):
        return None
    ws.remove(data_dir)
    return data_dir


def data_dir_record(data_dir: Path) -> dict[str, Any]:
    """What a run on a directory DVC does not version used: the directory, and a fingerprint of it.

    The fingerprint is the sha256 of every file's relative path and size, not of the contents (reading
    150 GB for it would cost as much as the validation): it tells runs on different data apart, and
    says when a directory changed shape, but not when a shard was rewritten with the same size.
    """
    data_dir = Path(data_dir).resolve()
    listing = []
    for parent, _, files in os.walk(data_dir):
        for name in files:
            path = Path(parent, name)
            listing.append((path.relative_to(data_dir).as_posix(), path.stat().st_size))
    listing.sort()
    digest = hashlib.sha256("".join(f"{name}\t{size}\n" for name, size in listing).encode()).hexdigest()
    return {"source": "data_dir", "data_dir": str(data_dir), "dataset_version": UNVERSIONED + digest[:24],
            "listing_sha256": digest, "files": len(listing), "bytes": sum(size for _, size in listing)}
