"""Fetch a published version, trusting no byte the manifest does not vouch for.

The manifest is checked first (`registry.check_manifest`): it must be the requested version's, of this
model, and name its files by plain relative paths, so that no two of them land on the same file. Files
are streamed into a temporary directory beside DEST while their sha256 is computed; any size or digest
that differs from the manifest (a tampered, truncated or replaced object) fails the whole pull, and the
temporary directory is removed. Only a fully verified copy is renamed to DEST, so DEST either does not
exist or holds exactly the version.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.contracts.names import MANIFEST
from pipeline.contracts.registry import MODEL, model_prefix, version_number, version_prefix
from pipeline.publish.registry import RegistryError, latest_manifest, published_manifest
from pipeline.publish.store import Store
from pipeline.publish.upload import run_all
from pipeline.settings import PREFIX


class IntegrityError(RuntimeError):
    """A downloaded object does not match the manifest; nothing was written to DEST."""


@dataclass(frozen=True)
class PullResult:
    version: str
    dest: Path
    manifest: dict[str, Any]
    files: int
    bytes: int
    seconds: float


def resolve(store: Store, prefix: str, model: str, version: str) -> dict[str, Any]:
    """The checked manifest of `version` ("latest" or vNNNN); a version without one does not exist."""
    if version == "latest":
        manifest = latest_manifest(store, store.bucket, prefix, model)
        if manifest is None:
            raise RegistryError(f"{store.uri(model_prefix(prefix, model))}: nothing published yet")
        return manifest
    version_number(version)  # ValueError on a malformed name
    return published_manifest(store, prefix, model, version)[0]


def _fetch(store: Store, key: str, target: Path, size: int, sha256: str) -> int:
    """Stream key into target (a new file in the staging directory), capped at the manifest's size, hashed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    got = store.download(key, target, max_bytes=size)
    if got.size != size:
        raise IntegrityError(f"{store.uri(key)}: {'more' if got.size > size else got.size} bytes, the manifest says "
                             f"{size}; refusing the version (truncated or replaced object)")
    if got.sha256 != sha256:
        raise IntegrityError(f"{store.uri(key)}: sha256 {got.sha256} differs from the manifest's {sha256}; "
                             "refusing the version (tampered object)")
    return got.size


def pull_version(
    client: Any,
    bucket: str,
    dest: Path,
    *,
    prefix: str = PREFIX.default,
    model: str = MODEL,
    version: str = "latest",
    concurrency: int = 4,
) -> PullResult:
    """Download version (or latest) into dest, which must not exist or be empty; every file verified."""
    started = time.perf_counter()
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest}: exists and is not an empty directory")
    store = client if isinstance(client, Store) else Store(client, bucket)
    manifest = resolve(store, prefix, model, version)
    version = manifest["version"]  # the one asked for, or the one latest.json names: resolve checked it
    base = version_prefix(prefix, model, version)
    files = manifest["files"]  # names checked: plain relative paths, none aliasing another
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        jobs = [
            lambda n=n, e=e: _fetch(store, base + n, staging / n, e["size"], e["sha256"])
            for n, e in sorted(files.items(), key=lambda item: -int(item[1]["size"]))
        ]
        with ThreadPoolExecutor(concurrency, thread_name_prefix="pull") as pool:
            total = sum(run_all(pool, jobs))
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PullResult(version, dest, manifest, len(files), total, time.perf_counter() - started)
