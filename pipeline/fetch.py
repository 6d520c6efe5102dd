"""`dvc pull` of data.dvc at a chosen git revision, into a run's own checkout.

The checkout is a `git clone --shared` of the project at that revision, so the revision's data.dvc
and .dvc/config are what DVC reads, and no two runs share DVC's lock. All checkouts use one DVC
cache under the workspace root, so a month's second run, or a retry, copies from the cache instead
of downloading 140 GB again; when the checkout already holds the data with the pinned md5, nothing
is pulled at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

DATA_DVC = "data.dvc"


class FetchError(RuntimeError):
    """git or dvc failed; the message names the command and its last output line."""


@dataclass(frozen=True)
class FetchResult:
    data_dir: Path
    md5: str
    revision: str  # the commit data.dvc was read at
    pulled: bool  # False: the data was already there with the right md5


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        detail = next((line for line in reversed(output) if line.strip()), f"exit {result.returncode}")
        raise FetchError(f"{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(args))} in {cwd}: {detail}")
    return result.stdout


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


def fetch_data(repo: Path, revision: str, checkout: Path, cache_dir: Path) -> FetchResult:
    repo, checkout, cache_dir = Path(repo).resolve(), Path(checkout), Path(cache_dir).resolve()
    commit = _run(["git", "rev-parse", "--verify", f"{revision}^{{commit}}"], repo).strip()
    if not (checkout / ".git").exists():
        if checkout.exists():
            shutil.rmtree(checkout)  # a clone interrupted half-way: start it again
        partial = checkout.with_name(checkout.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
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
    _run([_dvc(), "pull", "--quiet", DATA_DVC], checkout, env)
    return FetchResult(data_dir, md5, commit, pulled=True)
