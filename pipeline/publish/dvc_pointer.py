"""The published version as a DVC artifact: objects on the DVC remote, and a `.dvc` pointer in git.

A consumer with the registry repo runs `dvc pull models/resnet50.dvc` and gets the version's files.
We do not shell out to `dvc add`/`dvc push` for that: they would hash every byte again, copy the
model into the repo's cache, and need the S3 credentials in a subprocess (an Airflow connection's
would not be there). The objects are the version's own, already hashed, so we write DVC's remote
layout directly (`{dvc_prefix}/files/md5/ab/cdef...`, the directory listing as `<md5>.dir`) with
server-side copies from the version, and build the listing with DVC's own `Tree`, so its bytes
and md5 are exactly what DVC computes. `tests/test_publish_dvc.py` proves it with a real `dvc pull`.

The pointer moves forward only (like `latest`): a version that finishes after a newer one still gets
its tag, on a commit beside the branch, and the working tree keeps the newer pointer.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.contracts.names import POINTER_DIR
from pipeline.contracts.registry import version_number
from pipeline.publish.hashing import FileDigest, sha256_b64
from pipeline.publish.store import PreconditionFailed, Store

log = logging.getLogger(__name__)



class DvcError(RuntimeError):
    """The registry repo cannot take the pointer (not a DVC repo, another remote, a git failure)."""


@dataclass(frozen=True)
class DvcDir:
    md5: str  # "<md5>.dir", what the pointer records
    size: int
    nfiles: int
    listing: bytes  # the .dir object's bytes


def dvc_dir(files: Mapping[str, FileDigest]) -> DvcDir:
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    tree = Tree()
    for name, digest in files.items():
        tree.add(tuple(name.split("/")), Meta(size=digest.size), HashInfo("md5", digest.md5))
    tree.digest()
    return DvcDir(tree.hash_info.value, sum(d.size for d in files.values()), len(files), tree.as_bytes())


def object_key(dvc_prefix: str, md5: str) -> str:
    return f"{dvc_prefix.strip('/')}/files/md5/{md5[:2]}/{md5[2:]}"


def remote_url(bucket: str, dvc_prefix: str) -> str:
    return f"s3://{bucket}/{dvc_prefix.strip('/')}"


def push_object(store: Store, dvc_prefix: str, source_key: str, digest: FileDigest) -> int:
    """Copy one file of the version to the DVC remote (1), unless it is there already (0).

    Called as soon as the file is uploaded, so the copy of one file overlaps the upload of the next.
    Objects are content-addressed: one that exists with the right size holds the same bytes.
    """
    if digest.md5 is None:
        raise ValueError(f"{source_key}: no md5, which DVC needs")
    key = object_key(dvc_prefix, digest.md5)
    head = store.head(key)
    if head is not None and head["ContentLength"] == digest.size:
        return 0
    store.copy(source_key, key, digest.size)
    return 1


def push_listing(store: Store, dvc_prefix: str, directory: DvcDir) -> None:
    """The directory's listing, after all its files: to DVC, a directory whose .dir object exists is there."""
    # PreconditionFailed: the same listing (same md5), from an earlier attempt or an identical model.
    with contextlib.suppress(PreconditionFailed):
        store.put_new(object_key(dvc_prefix, directory.md5), directory.listing,
                      sha256_b64=sha256_b64(directory.listing), content_type="application/json")


def pointer_path(model: str) -> str:
    return f"{POINTER_DIR}/{model}.dvc"


def pointer_text(directory: DvcDir, model: str, version: str, uri: str) -> str:
    import yaml

    out = {"md5": directory.md5, "size": directory.size, "nfiles": directory.nfiles, "hash": "md5", "path": model}
    return yaml.safe_dump({"outs": [out], "meta": {"model": model, "version": version, "uri": uri}},
                          sort_keys=False)


def _pointer_version(text: str | None) -> str | None:
    import yaml

    if not text:
        return None
    try:
        version = (yaml.safe_load(text).get("meta") or {}).get("version")
        version_number(version)
        return version
    except (yaml.YAMLError, AttributeError, TypeError, ValueError):
        return None


def default_remote(repo: Path) -> str | None:
    """The URL of the repo's default DVC remote (`.dvc/config`, then `.dvc/config.local`)."""
    from configobj import ConfigObj

    config: dict[str, Any] = {}
    for name in ("config", "config.local"):
        path = repo / ".dvc" / name
        if path.exists():
            for section, values in ConfigObj(str(path)).items():
                config.setdefault(section, {}).update(values)
    remote = (config.get("core") or {}).get("remote")
    if not remote:
        return None
    return (config.get(f'remote "{remote}"') or {}).get("url")


def check_repo(repo: Path, bucket: str, dvc_prefix: str) -> None:
    """Refuse, before anything is uploaded, a repo whose `dvc pull` would look elsewhere for the objects."""
    if not (repo / ".dvc").is_dir():
        raise DvcError(f"{repo}: not a DVC repository (run `dvc init` there)")
    url, expected = default_remote(repo), remote_url(bucket, dvc_prefix)
    if url is None:
        log.warning(f"{repo}: no default DVC remote; `dvc pull` there needs `dvc remote add -d storage {expected}`")
    elif url.rstrip("/") != expected:
        raise DvcError(f"{repo}: the default DVC remote is {url}, but the model's objects go to {expected}")


def _git(repo: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
    identity: list[str] = []
    if args[0] in ("commit", "commit-tree", "tag"):
        probe = subprocess.run(["git", "-C", str(repo), "config", "user.email"], capture_output=True, text=True)
        if not probe.stdout.strip():
            identity = ["-c", "user.name=rn50 publish", "-c", "user.email=rn50@localhost"]
    result = subprocess.run(["git", "-C", str(repo), *identity, *args], capture_output=True, text=True, input=input,
                            env={**os.environ, **(env or {})}, timeout=120,
                            stdin=None if input is not None else subprocess.DEVNULL)
    if result.returncode != 0:
        raise DvcError(f"git {' '.join(args[:2])} in {repo}: {' '.join(result.stderr.split())[:300]}")
    return result.stdout.strip()


def _git_show(repo: Path, ref: str, path: str) -> str | None:
    result = subprocess.run(["git", "-C", str(repo), "show", f"{ref}:{path}"], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    return result.stdout if result.returncode == 0 else None


@contextmanager
def _locked(repo: Path) -> Iterator[None]:
    """One publish at a time edits the repo (git's index lock would fail the second, not wait)."""
    lock_dir = repo / ".git" if (repo / ".git").is_dir() else repo / ".dvc" / "tmp"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "rn50-publish.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_gitignore(repo: Path, model: str) -> Path:
    path = repo / POINTER_DIR / ".gitignore"
    lines = path.read_text().splitlines() if path.exists() else []
    if f"/{model}" not in lines:
        path.write_text("\n".join([*lines, f"/{model}"]) + "\n")
    return path


def write_pointer(repo: Path, model: str, version: str, text: str) -> dict[str, Any]:
    """Write the pointer into the working tree (if not older than the one there); in a git repo,
    commit it and tag the commit `{model}@{version}`. Returns what was done, for the log and result."""
    rel = pointer_path(model)
    path = repo / rel
    with _locked(repo):
        path.parent.mkdir(parents=True, exist_ok=True)
        current = _pointer_version(path.read_text() if path.exists() else None)
        newest = current is None or version_number(version) >= version_number(current)
        if newest:
            path.write_text(text)
            _ensure_gitignore(repo, model)
        if not (repo / ".git").exists():
            return {"pointer": str(path), "commit": None, "tag": None}
        return {"pointer": str(path), **_commit_and_tag(repo, model, version, rel, text, newest)}


def _commit_and_tag(repo: Path, model: str, version: str, rel: str, text: str, newest: bool) -> dict[str, Any]:
    tag = f"{model}@{version}"
    message = f"{model} {version}: {rel}"
    tagged = subprocess.run(["git", "-C", str(repo), "rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}"],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if tagged.returncode == 0:  # an earlier attempt got this far
        commit = tagged.stdout.strip()
        if _git_show(repo, commit, rel) != text:
            raise DvcError(f"{repo}: tag {tag} exists and points at a different {rel}")
        return {"commit": commit, "tag": tag}
    has_head = subprocess.run(["git", "-C", str(repo), "rev-parse", "-q", "--verify", "HEAD"], capture_output=True,
                              stdin=subprocess.DEVNULL).returncode == 0
    if newest or not has_head:
        paths = [rel, f"{POINTER_DIR}/.gitignore"]
        _git(repo, "add", "--", *paths)
        if has_head and _git_show(repo, "HEAD", rel) == text:
            commit = _git(repo, "rev-parse", "HEAD")  # committed by an earlier attempt, not yet tagged
        else:
            # Only our two paths: whatever else the user has staged stays staged and uncommitted.
            _git(repo, "commit", "-q", "-m", message, "--", *paths)
            commit = _git(repo, "rev-parse", "HEAD")
    else:
        # An older version finishing after a newer one: a commit beside the branch carries its pointer.
        blob = _git(repo, "hash-object", "-w", "--stdin", input=text)
        index = repo / ".git" / f"rn50-index-{os.getpid()}"
        env = {"GIT_INDEX_FILE": str(index)}
        try:
            _git(repo, "read-tree", "HEAD", env=env)
            _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}", env=env)
            tree = _git(repo, "write-tree", env=env)
        finally:
            index.unlink(missing_ok=True)
        commit = _git(repo, "commit-tree", tree, "-p", "HEAD", "-m", message)
    _git(repo, "tag", "-a", tag, "-m", message, commit)
    return {"commit": commit, "tag": tag}
