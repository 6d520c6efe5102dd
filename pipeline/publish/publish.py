"""Publish a gated model directory as the next immutable version of the registry.

The files come from where each stage left them (`StageDirs`): all in one model directory for `rn50
publish`, or a run workspace's folders in the DAG (train's model/, evaluate's eval/ and export/, the
gate's gate/). The version's file names are the same either way; publishing only reads and uploads.

The order is what makes a version invisible until it is complete and safe to retry at any point:

1. refuse early (before any byte moves) a model the gate did not pass, a model directory missing a
   file the version must hold, or a DVC repo whose remote is elsewhere;
2. claim the version (or find this run's earlier claim) with a conditional create;
3. upload every file with conditional creates, resuming what an earlier attempt left, and copy each
   to the DVC remote as soon as it is there; then abort every multipart upload still open under the
   version (a killed attempt's, or one whose CreateMultipartUpload answer was lost);
4. write DVC's directory listing;
5. write manifest.json, the last object of the version: from now on it exists;
6. move latest.json forward by compare-and-swap;
7. write the `.dvc` pointer into the registry repo, commit and tag it.

A crash anywhere before 5 leaves an invisible version that the next attempt of the same run (same
run id) resumes; a crash after 5 leaves a complete version whose retry only redoes 6 and 7.

A run whose version holds other bytes than the model directory now does (one of its tasks was
cleared and re-run: evaluate writes a new throughput, the gate a new time, training new weights)
publishes a new version whose manifest names the one it `supersedes`; a version never changes, and
one left without a manifest is abandoned. Making the files reproducible instead could not cover a
re-run of training, nor a gate whose champion has changed since.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.contracts.config import trained_by
from pipeline.contracts.manifest import build_manifest, manifest_bytes
from pipeline.contracts.names import (
    MANIFEST,
)
from pipeline.contracts.registry import MODEL, version_prefix
from pipeline.provenance import airflow_ids, dataset_version
from pipeline.publish import dvc_pointer
from pipeline.publish.hashing import FileDigest, sha256_b64
from pipeline.publish.registry import (
    Claim,
    advance_latest,
    claim_version,
    now,
    published_manifest,
    superseded_version,
)
from pipeline.publish.store import PreconditionFailed, Store
from pipeline.publish.upload import ConflictError, Source, Transfer, Uploader, run_all, source_size
from pipeline.redact import redact_obj
from pipeline.settings import PREFIX

log = logging.getLogger(__name__)

class PublishError(RuntimeError):
    """The model directory cannot be published as it is (nothing was uploaded)."""


class PublishRefused(PublishError):
    """The gate did not pass the model and no one forced its publication."""


@dataclass(frozen=True)
class PublishResult:
    version: str
    uri: str
    manifest: dict[str, Any]
    state: str  # "new", "resumed" (an earlier attempt's version completed now), "complete" (already was)
    uploaded: int  # files sent (in full or the missing parts)
    present: int  # files an earlier attempt had already put there
    latest: str  # the version latest.json names afterwards (ours, or a newer one)
    pointer: dict[str, Any] | None  # the DVC pointer written, its commit and tag
    bytes: int
    seconds: float


def default_run_id(model_dir: Path, files: dict[str, Source]) -> str:
    """Stable across retries of the same files on the same machine, new when any file changes.

    From names, sizes and modification times (cheap: no hashing before the claim), plus where they are.
    """
    h = hashlib.sha256(f"{socket.gethostname()}:{model_dir.resolve()}".encode())
    for name, source in sorted(files.items()):
        if isinstance(source, bytes):
            h.update(f"{name}:{hashlib.sha256(source).hexdigest()}\n".encode())
        else:
            stat = source.stat()
            h.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return "local-" + h.hexdigest()[:20]


def resolve_lineage(lineage: dict[str, Any] | None, *, code_repo: Path, data_dvc: Path | None,
                    config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The caller's lineage, completed from data.dvc, config.json and Airflow's environment where it is silent.

    The code version is the one `rn50 train` recorded in config.json (`config`): the code that trained, which
    may be a trainer image's and not this process's. A config.json that records none leaves it None (unknown),
    never this checkout's commit, which did not train the model."""
    resolved = dict(lineage or {})
    if resolved.get("dataset_version") is None:
        resolved["dataset_version"] = dataset_version(data_dvc or code_repo / "data.dvc")
    if resolved.get("code_version") is None:
        resolved["code_version"] = (trained_by(config) or {}).get("code_version")
    for key, value in (airflow_ids() or {}).items():
        if resolved.get(key) is None:
            resolved[key] = value
    return resolved


def _same_files(manifest: dict[str, Any], digests: dict[str, FileDigest], uri: str) -> None:
    theirs = {name: entry.get("sha256") for name, entry in (manifest.get("files") or {}).items()}
    ours = {name: d.sha256 for name, d in digests.items()}
    if theirs != ours:
        differ = sorted(n for n in set(theirs) | set(ours) if theirs.get(n) != ours.get(n))
        raise ConflictError(f"{uri} was published by this run id with other files ({', '.join(differ[:5])})")


def _abort_uploads(store: Store, base: str) -> None:
    for upload in store.list_uploads(base):
        store.abort_upload(upload["Key"], upload["UploadId"])


def publish_files(
    files: dict[str, Source],
    *,
    evaluation: dict[str, Any],
    decision: dict[str, Any],
    config: dict[str, Any],
    lineage: dict[str, Any],
    run_id: str,
    client: Any,
    bucket: str,
    prefix: str = PREFIX.default,
    model: str = MODEL,
    dvc_repo: Path | None = None,
    dvc_prefix: str | None = "dvc",
    transfer: Transfer | None = None,
    cost: dict[str, Any] | None = None,
) -> PublishResult:
    """Publish `files` (name in the version -> local file or bytes) as the next version of `model`, with a
    manifest built from the other fields (pipeline.contracts.manifest); see the module docstring. The caller
    has checked them (pipeline.stages.publish): this only claims, uploads and moves `latest`.

    `lineage` is complete (resolve_lineage). `dvc_prefix=None` skips the DVC remote (and then no pointer can
    be written); `dvc_repo` is the registry repo the pointer is committed to.
    """
    started = time.perf_counter()
    transfer = transfer or Transfer()
    if dvc_repo is not None:
        if dvc_prefix is None:
            raise PublishError("a DVC pointer needs the DVC remote; dvc_prefix is None")
        dvc_pointer.check_repo(Path(dvc_repo), bucket, dvc_prefix)

    store = client if isinstance(client, Store) else Store(client, bucket)
    store.check_bucket()
    total = sum(source_size(s) for s in files.values())

    def fill(claim: Claim, replaced: str | None, part_pool: ThreadPoolExecutor,
             file_pool: ThreadPoolExecutor) -> tuple[dict[str, Any], bytes, int, int]:
        """Put the files into the claimed version and write its manifest, or check that the complete
        version holds them: (manifest, its bytes, files sent, files already there). ConflictError when
        the version holds other bytes."""
        version, base = claim.version, version_prefix(prefix, model, claim.version)
        uri = store.uri(base)
        log.info(f"{uri}: {'claimed' if claim.state == 'new' else claim.state + ' (earlier attempt of this run)'}"
                 f" for run {run_id}")
        uploader = Uploader(store, transfer, part_pool, md5=dvc_prefix is not None)
        if claim.state == "complete":
            manifest, body = published_manifest(store, prefix, model, version)
            digests = dict(zip(files, run_all(file_pool, [lambda s=s: uploader.local_digest(s)
                                                          for s in files.values()]), strict=True))
            _same_files(manifest, digests, uri)
            return manifest, body, 0, len(files)
        existing = store.list_keys(base) if claim.state == "resumed" else {}
        uploads = store.list_uploads(base) if claim.state == "resumed" else []

        def put(name: str) -> tuple[FileDigest, str, int]:
            digest, how = uploader.put(base + name, files[name], exists=(base + name) in existing, uploads=uploads)
            copied = 0 if dvc_prefix is None else dvc_pointer.push_object(store, dvc_prefix, base + name, digest)
            return digest, how, copied

        # Largest first: the big checkpoint shard's parts start flowing while the small files go by.
        order = sorted(files, key=lambda n: -source_size(files[n]))
        results = run_all(file_pool, [lambda n=n: put(n) for n in order], stop=uploader.stop)
        digests = {n: r[0] for n, r in sorted(zip(order, results, strict=True))}
        present = sum(1 for _, how, _ in results if how == "present")
        # Every file of the version now exists and cannot be replaced, so any multipart upload still open
        # under it can never complete: one a killed attempt left, or one this attempt started without
        # knowing it (a CreateMultipartUpload whose answer was lost, then retried). The version is ours
        # by its claim, so these are ours to abort; S3 bills open uploads until they are.
        _abort_uploads(store, base)
        dvc_info = None
        if dvc_prefix is not None:
            directory = dvc_pointer.dvc_dir(digests)
            dvc_pointer.push_listing(store, dvc_prefix, directory)
            log.info(f"DVC remote {dvc_pointer.remote_url(bucket, dvc_prefix)}: {directory.md5} "
                     f"({sum(r[2] for r in results)} objects copied)")
            dvc_info = {"remote": dvc_pointer.remote_url(bucket, dvc_prefix), "md5": directory.md5,
                        "size": directory.size, "nfiles": directory.nfiles,
                        "pointer": dvc_pointer.pointer_path(model), "tag": f"{model}@{version}"}
        # A first claim of the run supersedes nothing; any other looks for the run's newest complete version.
        supersedes = (None if claim.state == "new" and replaced is None
                      else superseded_version(store, prefix, model, run_id, version))
        manifest = redact_obj(build_manifest(
            model=model, version=version, uri=uri, created_at=now(), run_id=run_id, files=digests,
            evaluation=evaluation, decision=decision, config=config, lineage=lineage, dvc=dvc_info,
            supersedes=supersedes, cost=cost,
        ), store.client)
        body = manifest_bytes(manifest)
        try:
            store.put_new(base + MANIFEST, body, sha256_b64=sha256_b64(body), content_type="application/json")
        except PreconditionFailed:  # a concurrent attempt of this run finished first: its manifest stands
            manifest, body = published_manifest(store, prefix, model, version)
            _same_files(manifest, digests, uri)
        return manifest, body, len(results) - present, present

    claim = claim_version(store, prefix, model, run_id)
    with ThreadPoolExecutor(transfer.concurrency, thread_name_prefix="part") as part_pool, \
            ThreadPoolExecutor(4, thread_name_prefix="file") as file_pool:
        try:
            manifest, body, uploaded, present = fill(claim, None, part_pool, file_pool)
        except ConflictError as exc:
            # The run's version holds other bytes: a task of the run (train, evaluate, the gate) was cleared
            # and re-run since. That version stays as it is, and these files become a new one; a version
            # that never got its manifest is abandoned, and its open multipart uploads with it.
            log.warning(f"{exc}; publishing these files as a new version of run {run_id}")
            if claim.state != "complete":
                _abort_uploads(store, version_prefix(prefix, model, claim.version))
            replaced = claim.version
            claim = claim_version(store, prefix, model, run_id, after=replaced)
            manifest, body, uploaded, present = fill(claim, replaced, part_pool, file_pool)
    version = claim.version
    uri = store.uri(version_prefix(prefix, model, version))
    latest = advance_latest(store, prefix, model, version, hashlib.sha256(body).hexdigest())
    log.info(f"latest -> {latest}" + ("" if latest == version else f" (newer than {version}; left as it is)"))
    pointer = None
    if dvc_repo is not None:
        info = manifest.get("dvc")
        if not info:
            raise PublishError(f"{uri} was published without DVC objects; cannot write a pointer for it")
        directory = dvc_pointer.DvcDir(info["md5"], info["size"], info["nfiles"], b"")
        text = dvc_pointer.pointer_text(directory, model, version, uri)
        pointer = dvc_pointer.write_pointer(Path(dvc_repo), model, version, text)
        log.info(f"DVC pointer {pointer['pointer']}" + (f", tag {pointer['tag']}" if pointer.get("tag") else ""))
    seconds = time.perf_counter() - started
    log.info(f"{uri}: {uploaded} files sent, {present} already there, {total / 1e6:.1f} MB in {seconds:.1f} s")
    return PublishResult(version=version, uri=uri, manifest=manifest, state=claim.state, uploaded=uploaded,
                         present=present, latest=latest, pointer=pointer, bytes=total, seconds=seconds)
