"""Versions in the registry: their names, who claimed them, which are complete, and `latest`.

Keys under `{prefix}/{model}/`:
- `v0001/.claim.json`: written first, with IfNoneMatch="*", by the one publish that owns the version.
  Allocation is race-free because S3 lets only one conditional create of a key succeed: a publish
  that loses tries the next number. The claim holds the run id, so a retry of the same run finds
  its version again and resumes it instead of taking a new one.
- `v0001/...`: the files, each created once and never replaced;
- `v0001/manifest.json`: written last. Without it a version does not exist for `list`, `pull` or
  `latest`, whatever else is under its prefix.
- `latest.json`: the newest complete version. It moves by compare-and-swap on its ETag, and only
  forward, so two publishes finishing out of order cannot move it back.

Finding an earlier claim of a run reads every version's claim (one GET each): monthly retrains keep
that to a few hundred small reads a decade.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pipeline.publish.hashing import sha256_b64
from pipeline.publish.store import PreconditionFailed, Store, StoreError

MANIFEST = "manifest.json"
LATEST = "latest.json"
CLAIM = ".claim.json"
VERSION_RE = re.compile(r"^v(\d{4,})$")
MAX_CLAIM_TRIES = 1000
MAX_SWAP_TRIES = 100


class RegistryError(RuntimeError):
    """The registry is not in a state this operation can work with (a one-line reason)."""


def format_version(number: int) -> str:
    return f"v{number:04d}"


def version_number(version: str) -> int:
    match = VERSION_RE.match(version)
    if not match:
        raise ValueError(f"{version!r} is not a version name (v0001, v0002, ...)")
    return int(match.group(1))


def model_prefix(prefix: str, model: str) -> str:
    if not model or "/" in model:
        raise ValueError(f"model name {model!r} must be non-empty and hold no '/'")
    prefix = prefix.strip("/")
    return f"{prefix}/{model}/" if prefix else f"{model}/"


def version_prefix(prefix: str, model: str, version: str) -> str:
    return f"{model_prefix(prefix, model)}{version}/"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _store(client: Any, bucket: str) -> Store:
    return client if isinstance(client, Store) else Store(client, bucket)


def version_names(store: Store, prefix: str, model: str) -> list[str]:
    """Every version prefix present, complete or not, oldest first."""
    root = model_prefix(prefix, model)
    names = [p[len(root):].rstrip("/") for p in store.list_prefixes(root)]
    return sorted((n for n in names if VERSION_RE.match(n)), key=version_number)


def read_manifest(store: Store, prefix: str, model: str, version: str) -> dict[str, Any] | None:
    """The manifest of a complete version, or None when the version is incomplete or absent."""
    manifest, _ = store.get_json(version_prefix(prefix, model, version) + MANIFEST)
    return manifest


def read_latest(store: Store, prefix: str, model: str) -> tuple[dict[str, Any] | None, str | None]:
    return store.get_json(model_prefix(prefix, model) + LATEST)


def latest_manifest(client: Any, bucket: str, prefix: str, model: str) -> dict[str, Any] | None:
    """The manifest `latest` points to, or None when nothing has been published.

    The manifest's bytes are checked against the sha256 `latest.json` recorded for them.
    """
    store = _store(client, bucket)
    latest, _ = read_latest(store, prefix, model)
    if latest is None:
        return None
    version = latest.get("version", "")
    key = version_prefix(prefix, model, version) + MANIFEST
    try:
        body, _ = store.get_bytes(key)
    except StoreError as exc:
        raise RegistryError(f"{store.uri(model_prefix(prefix, model) + LATEST)} names {version}, but: {exc}") from None
    expected = latest.get("manifest_sha256")
    if expected and hashlib.sha256(body).hexdigest() != expected:
        raise RegistryError(f"{store.uri(key)}: sha256 differs from the one latest.json recorded; refusing it")
    return json.loads(body)


def list_versions(client: Any, bucket: str, prefix: str, model: str) -> list[dict[str, Any]]:
    """The manifests of complete versions, oldest first; claimed but incomplete versions are skipped."""
    store = _store(client, bucket)
    manifests = []
    for version in version_names(store, prefix, model):
        manifest = read_manifest(store, prefix, model, version)
        if manifest is not None:
            manifests.append(manifest)
    return manifests


@dataclass(frozen=True)
class Claim:
    version: str
    state: Literal["new", "resumed", "complete"]


def _claim_body(run_id: str) -> bytes:
    return (json.dumps({"run_id": run_id, "claimed_at": now(), "host": socket.gethostname(), "pid": os.getpid()},
                       indent=2) + "\n").encode()


def find_claim(store: Store, prefix: str, model: str, run_id: str, versions: list[str]) -> Claim | None:
    for version in reversed(versions):  # a retry is most likely of a recent version
        base = version_prefix(prefix, model, version)
        claim, _ = store.get_json(base + CLAIM)
        if claim is not None and claim.get("run_id") == run_id:
            complete = store.head(base + MANIFEST) is not None
            return Claim(version, "complete" if complete else "resumed")
    return None


def claim_version(store: Store, prefix: str, model: str, run_id: str) -> Claim:
    """This run's version: the one it claimed on an earlier attempt, or the next free number."""
    versions = version_names(store, prefix, model)
    earlier = find_claim(store, prefix, model, run_id, versions)
    if earlier is not None:
        return earlier
    number = version_number(versions[-1]) + 1 if versions else 1
    body = _claim_body(run_id)
    for _ in range(MAX_CLAIM_TRIES):
        version = format_version(number)
        key = version_prefix(prefix, model, version) + CLAIM
        try:
            store.put_new(key, body, sha256_b64=sha256_b64(body), content_type="application/json")
            return Claim(version, "new")
        except PreconditionFailed:
            claim, _ = store.get_json(key)
            if claim is not None and claim.get("run_id") == run_id:
                # Our own PUT, retried after a lost response, or a concurrent attempt of the same run.
                return Claim(version, "resumed")
            number += 1
    raise RegistryError(f"no free version after {MAX_CLAIM_TRIES} tries under {store.uri(model_prefix(prefix, model))}")


def advance_latest(store: Store, prefix: str, model: str, version: str, manifest_sha256: str) -> str:
    """Point latest.json at version unless it already names a newer one; returns what it names after.

    Compare-and-swap on the ETag: a concurrent publish that moved it first makes our PUT fail, and we
    re-read and decide again, so the newest version always wins whatever order they finish in.
    """
    base = version_prefix(prefix, model, version)
    if store.head(base + MANIFEST) is None:
        raise RegistryError(f"{store.uri(base)} has no manifest; latest only ever names a complete version")
    key = model_prefix(prefix, model) + LATEST
    for _ in range(MAX_SWAP_TRIES):
        current, etag = store.get_json(key)
        if current is not None:
            try:
                if version_number(current.get("version", "")) >= version_number(version):
                    return current["version"]
            except ValueError:
                pass  # an unreadable latest.json is replaced by a readable one
        body = (json.dumps({"model": model, "version": version, "uri": store.uri(base),
                            "manifest": base + MANIFEST, "manifest_sha256": manifest_sha256,
                            "updated_at": now()}, indent=2) + "\n").encode()
        try:
            store.put_swap(key, body, etag=etag, sha256_b64=sha256_b64(body))
            return version
        except PreconditionFailed:
            continue
    raise RegistryError(f"{store.uri(key)}: still changing after {MAX_SWAP_TRIES} compare-and-swap tries")
