"""Versions in the registry: their names, who claimed them, which are complete, and `latest`.

Keys under `{prefix}/{model}/`:
- `v0001/.claim.json`: written first, with IfNoneMatch="*", by the one publish that owns the version.
  Allocation is race-free because S3 lets only one conditional create of a key succeed: a publish
  that loses tries the next number. The claim holds the run id, so a retry of the same run finds
  its version again and resumes it instead of taking a new one. When that version holds other bytes
  (a task of the run was cleared and re-run), the run claims a new version instead, and its manifest
  names the one it `supersedes`.
- `v0001/...`: the files, each created once and never replaced;
- `v0001/manifest.json`: written last. Without it a version does not exist for `list`, `pull` or
  `latest`, whatever else is under its prefix.
- `latest.json`: the newest complete version. It moves by compare-and-swap on its ETag, and only
  forward, so two publishes finishing out of order cannot move it back. One that names no complete
  version (unreadable, too large, not a pointer, naming a version without a manifest, or missing while
  complete versions exist) would block the gate, `pull` and every publish for good; whoever reads it
  next replaces it, by compare-and-swap on the bad object's ETag, with a pointer to the newest
  complete version.

Nothing read from the bucket is trusted: the JSON objects are read bounded (`MAX_JSON_BYTES`), a
manifest must be an object that names its own model and version, and its file names must be plain
relative paths, so no two of them land on the same file of a pulled copy.

Finding an earlier claim of a run reads every version's claim (one GET each): monthly retrains keep
that to a few hundred small reads a decade.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pipeline.contracts.names import CLAIM, LATEST, MANIFEST, REPORT_DIR, REPORT_INDEX
from pipeline.contracts.registry import (
    VERSION_RE,
    check_file_name,
    format_version,
    model_prefix,
    version_number,
    version_prefix,
)
from pipeline.publish.hashing import sha256_b64
from pipeline.publish.store import (
    MAX_JSON_BYTES,
    InvalidObject,
    NotFound,
    PreconditionFailed,
    Store,
    parse_json,
)

log = logging.getLogger(__name__)

MAX_CLAIM_TRIES = 1000
MAX_SWAP_TRIES = 100
class RegistryError(RuntimeError):
    """The registry is not in a state this operation can work with (a one-line reason)."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _store(client: Any, bucket: str) -> Store:
    return client if isinstance(client, Store) else Store(client, bucket)


def version_names(store: Store, prefix: str, model: str) -> list[str]:
    """Every version prefix present, complete or not, oldest first."""
    root = model_prefix(prefix, model)
    names = [p[len(root):].rstrip("/") for p in store.list_prefixes(root)]
    return sorted((n for n in names if VERSION_RE.fullmatch(n)), key=version_number)


def _kind(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def check_manifest(value: Any, uri: str, model: str, version: str) -> dict[str, Any]:
    """The manifest of `model` `version`, with every field pull, list and the gate rely on checked;
    RegistryError naming the object otherwise."""
    def bad(why: str) -> RegistryError:
        return RegistryError(f"{uri}: {why}; not a valid manifest")

    if not isinstance(value, dict):
        raise bad(f"a JSON {_kind(value)}, not an object")
    if value.get("model") != model:
        raise bad(f"is for model {value.get('model')!r}, not {model!r}")
    if value.get("version") != version:
        raise bad(f"says version {value.get('version')!r}, not {version!r}")
    files = value.get("files")
    if not isinstance(files, dict):
        raise bad(f"files: not an object but a JSON {_kind(files)}")
    for name, entry in files.items():
        try:
            check_file_name(name)
        except ValueError as exc:
            raise bad(f"files[{name!r}]: {exc}") from None
        size, sha256 = (entry.get("size"), entry.get("sha256")) if isinstance(entry, dict) else (None, None)
        if (not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(sha256, str)
                or not re.fullmatch(r"[0-9a-f]{64}", sha256)):
            raise bad(f"files[{name!r}]: needs a size (bytes) and a sha256 (64 hex digits)")
        parents = ["/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1)]
        if clash := next((p for p in parents if p in files), None):
            raise bad(f"files[{name!r}]: inside {clash!r}, which is a file too")
    for field in ("metrics", "gate"):
        if value.get(field) is not None and not isinstance(value[field], dict):
            raise bad(f"{field}: not an object but a JSON {_kind(value[field])}")
    return value


def parse_manifest(body: bytes, uri: str, model: str, version: str) -> dict[str, Any]:
    try:
        value = parse_json(body, uri)
    except InvalidObject as exc:
        raise RegistryError(f"{exc}; not a valid manifest") from None
    return check_manifest(value, uri, model, version)


def _manifest_bytes(store: Store, key: str) -> bytes | None:
    try:
        return store.get_bytes(key, max_bytes=MAX_JSON_BYTES)[0]
    except NotFound:
        return None
    except InvalidObject as exc:  # too large
        raise RegistryError(f"{exc}; not a valid manifest") from None


def load_manifest(store: Store, prefix: str, model: str, version: str) -> tuple[dict[str, Any], bytes] | None:
    """(manifest, its bytes) of a complete version, checked; None when the version is incomplete or absent."""
    key = version_prefix(prefix, model, version) + MANIFEST
    body = _manifest_bytes(store, key)
    return None if body is None else (parse_manifest(body, store.uri(key), model, version), body)


def published_manifest(store: Store, prefix: str, model: str, version: str) -> tuple[dict[str, Any], bytes]:
    """(manifest, its bytes) of a complete version, checked; RegistryError when the version has none."""
    found = load_manifest(store, prefix, model, version)
    if found is None:
        raise RegistryError(f"{store.uri(version_prefix(prefix, model, version))}: not a published version "
                            "(no manifest.json)")
    return found


def read_manifest(store: Store, prefix: str, model: str, version: str) -> dict[str, Any] | None:
    """The manifest of a complete version, or None when the version is incomplete or absent."""
    found = load_manifest(store, prefix, model, version)
    return found[0] if found else None


def _latest_body(store: Store, prefix: str, model: str, version: str, manifest_sha256: str) -> bytes:
    base = version_prefix(prefix, model, version)
    return (json.dumps({"model": model, "version": version, "uri": store.uri(base), "manifest": base + MANIFEST,
                        "manifest_sha256": manifest_sha256, "updated_at": now()}, indent=2) + "\n").encode()


def _newest_complete(store: Store, prefix: str, model: str) -> tuple[str, bytes] | None:
    """(version, manifest bytes) of the newest version with a valid manifest, or None."""
    for version in reversed(version_names(store, prefix, model)):
        try:
            found = load_manifest(store, prefix, model, version)
        except RegistryError as exc:
            log.warning(f"{exc}; latest.json will not name it")
            continue
        if found is not None:
            return version, found[1]
    return None


def _latest_problem(store: Store, prefix: str, model: str, value: Any) -> str | None:
    """Why latest.json (as parsed) does not name a complete version, or None when it does."""
    uri = store.uri(model_prefix(prefix, model) + LATEST)
    if not isinstance(value, dict):
        return f"{uri}: a JSON {_kind(value)}, not an object"
    version = value.get("version")
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        return f"{uri}: names {version!r}, not a version"
    if store.head(version_prefix(prefix, model, version) + MANIFEST) is None:
        return f"{uri}: names {version}, which has no manifest"
    return None


def read_latest(store: Store, prefix: str, model: str) -> tuple[dict[str, Any] | None, str | None]:
    """(latest.json, its ETag); (None, ETag or None) when no complete version exists.

    A latest.json that names no complete version is replaced here, by compare-and-swap on the ETag it
    was read with, by a pointer to the newest complete version: a concurrent change wins, and is read
    again. With no complete version to point at, it is left for the first publish to replace.
    """
    key = model_prefix(prefix, model) + LATEST
    for _ in range(MAX_SWAP_TRIES):
        try:
            value, etag = store.get_json(key)
            problem = None if value is None else _latest_problem(store, prefix, model, value)
        except InvalidObject as exc:
            etag, problem = exc.etag, str(exc)
        else:
            if value is not None and problem is None:
                return value, etag
        # Missing (a first publish between its manifest and its latest.json, or a deleted one) or bad.
        newest = _newest_complete(store, prefix, model)
        if newest is None:
            return None, etag
        version, manifest = newest
        body = _latest_body(store, prefix, model, version, hashlib.sha256(manifest).hexdigest())
        try:
            swapped = store.put_swap(key, body, etag=etag, sha256_b64=sha256_b64(body))
        except PreconditionFailed:
            continue  # changed since we read it: read it again
        if problem:  # a missing one is no news: every first publish creates it this way
            log.warning(f"{problem}; replaced by a pointer to {version}")
        return json.loads(body), swapped
    raise RegistryError(f"{store.uri(key)}: still changing after {MAX_SWAP_TRIES} reads")


def latest_manifest(client: Any, bucket: str, prefix: str, model: str) -> dict[str, Any] | None:
    """The manifest `latest` points to, or None when nothing has been published.

    The manifest's bytes are checked against the sha256 `latest.json` recorded for them.
    """
    store = _store(client, bucket)
    latest, _ = read_latest(store, prefix, model)
    if latest is None:
        return None
    version = latest["version"]
    key = version_prefix(prefix, model, version) + MANIFEST
    body = _manifest_bytes(store, key)
    if body is None:  # deleted since read_latest saw it
        raise RegistryError(f"{store.uri(model_prefix(prefix, model) + LATEST)} names {version}, but "
                            f"{store.uri(key)} is gone")
    expected = latest.get("manifest_sha256")
    if expected and hashlib.sha256(body).hexdigest() != expected:
        raise RegistryError(f"{store.uri(key)}: sha256 differs from the one latest.json recorded; refusing it")
    return parse_manifest(body, store.uri(key), model, version)


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


def claim_run_id(store: Store, key: str) -> str | None:
    """The run a claim names; None when absent or not a claim we write (then it is certainly not ours)."""
    try:
        claim, _ = store.get_json(key)
    except InvalidObject:
        return None
    return claim.get("run_id") if isinstance(claim, dict) else None


def find_claim(store: Store, prefix: str, model: str, run_id: str, versions: list[str]) -> Claim | None:
    for version in reversed(versions):  # a retry is most likely of a recent version
        base = version_prefix(prefix, model, version)
        if claim_run_id(store, base + CLAIM) == run_id:
            complete = store.head(base + MANIFEST) is not None
            return Claim(version, "complete" if complete else "resumed")
    return None


def claim_version(store: Store, prefix: str, model: str, run_id: str, *, after: str | None = None) -> Claim:
    """This run's version: the one it claimed on an earlier attempt, or the next free number.

    `after` is a version of this run that holds other files than this attempt's (its task was cleared
    and re-run): the run's claims up to it are passed over, and a newer one (a concurrent attempt's) or
    a new number is returned.
    """
    versions = version_names(store, prefix, model)
    earlier = find_claim(store, prefix, model, run_id, versions)
    if earlier is not None and (after is None or version_number(earlier.version) > version_number(after)):
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
            if claim_run_id(store, key) == run_id:
                # Our own PUT, retried after a lost response, or a concurrent attempt of the same run.
                return Claim(version, "resumed")
            number += 1
    raise RegistryError(f"no free version after {MAX_CLAIM_TRIES} tries under {store.uri(model_prefix(prefix, model))}")


def superseded_version(store: Store, prefix: str, model: str, run_id: str, version: str) -> str | None:
    """The newest complete version this run published before `version`, which `version` replaces: a task
    cleared and re-run publishes again under the same run id, with files that differ."""
    for older in reversed(version_names(store, prefix, model)):
        if version_number(older) >= version_number(version):
            continue
        base = version_prefix(prefix, model, older)
        if claim_run_id(store, base + CLAIM) == run_id and store.head(base + MANIFEST) is not None:
            return older
    return None


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
        current, etag = read_latest(store, prefix, model)  # a corrupt one is repaired first
        if current is not None and version_number(current["version"]) >= version_number(version):
            return current["version"]
        body = _latest_body(store, prefix, model, version, manifest_sha256)
        try:
            store.put_swap(key, body, etag=etag, sha256_b64=sha256_b64(body))
            return version
        except PreconditionFailed:
            continue
    raise RegistryError(f"{store.uri(key)}: still changing after {MAX_SWAP_TRIES} compare-and-swap tries")


def baseline_passed(gate: Any) -> str | None:
    """The live baseline the gate measured the version against, as `rn50 list` names it: "champion v0003",
    "ngc", "path", or "none (floor only)" when there was none (the floor alone decided); None when the
    manifest predates the gate recording it."""
    if not isinstance(gate, dict) or "live_baseline" not in gate:
        return None
    live = gate["live_baseline"]
    if live is None:
        return "none (floor only)"
    model = live.get("model") if isinstance(live, dict) else None
    kind = model.get("kind") if isinstance(model, dict) else None
    if kind == "champion":
        return f"champion {model.get('version')}"
    return str(kind) if kind else "unknown"


def report_uri(manifest: dict[str, Any]) -> str | None:
    """The version's run report, s3://.../vNNNN/report/index.html; None when its files hold none."""
    uri, files, name = manifest.get("uri"), manifest.get("files"), f"{REPORT_DIR}/{REPORT_INDEX}"
    if not isinstance(uri, str) or not isinstance(files, dict) or name not in files:
        return None
    return f"{uri.rstrip('/')}/{name}"


def version_summary(manifest: dict[str, Any], latest: str | None = None) -> dict[str, Any]:
    """What `rn50 list` shows of a version (its --json line): figures, the baseline it passed, whether it was
    forced, its data, date, and its report's URI (None when the version holds no report)."""
    metrics = manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else {}
    return {
        "version": manifest.get("version"),
        "created_at": manifest.get("created_at"),
        "top1_accuracy": metrics.get("top1_accuracy"),
        "top5_accuracy": metrics.get("top5_accuracy"),
        "verdict": manifest.get("verdict"),
        "forced": bool(manifest.get("force_publish")),
        "baseline": baseline_passed(manifest.get("gate")),
        "dataset_version": manifest.get("dataset_version"),
        "report": report_uri(manifest),
        "uri": manifest.get("uri"),
        "latest": manifest.get("version") == latest,
    }
