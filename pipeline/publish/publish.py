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
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.files import NotRegularFile, read_regular, regular_file
from pipeline.gate import DECISION_FILE, EVAL_FILE, eval_summary
from pipeline.publish import dvc_pointer
from pipeline.publish.hashing import FileDigest, sha256_b64
from pipeline.publish.manifest import (
    PROJECT_ROOT,
    airflow_ids,
    build_manifest,
    dataset_version,
    manifest_bytes,
    read_json,
    trained_by,
)
from pipeline.publish.redact import redact_obj
from pipeline.publish.registry import (
    MANIFEST,
    MODEL,
    Claim,
    advance_latest,
    check_file_name,
    claim_version,
    now,
    published_manifest,
    superseded_version,
    version_prefix,
)
from pipeline.publish.store import PreconditionFailed, Store
from pipeline.publish.upload import ConflictError, Source, Transfer, Uploader, run_all, source_size
from pipeline.settings import PREFIX
from pipeline.train.export import (  # no TensorFlow: publish runs where there is none
    EXPORT_FILE,
    LABELS_FILE,
    SAVED_MODEL_DIR,
    SAVED_MODEL_PB,
    is_current,
    saved_model_current,
)
from pipeline.train.logs import METRICS_FILE

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
# The version's files and the StageDirs folder each comes from (checkpoints/ and metrics.jsonl: see collect_files).
REQUIRED = {"config.json": "model", EVAL_FILE: "eval", DECISION_FILE: "gate"}
# The .keras export; required with `require_export`, as is saved_model/ with labels.txt (saved_model_files).
OPTIONAL = {EXPORT_FILE: "export"}
# Publishing never exports: the default queue has no TensorFlow (and exporting again changes the bytes).
EXPORT_HINT = ("the evaluate task exports it on the gpu queue: re-run evaluate (or `rn50 publish --export` "
               "where TensorFlow is installed)")


class PublishError(RuntimeError):
    """The model directory cannot be published as it is (nothing was uploaded)."""


class PublishRefused(PublishError):
    """The gate did not pass the model and no one forced its publication."""


@dataclass(frozen=True)
class StageDirs:
    """Where each stage left its files: train (checkpoints/, config.json, metrics.jsonl), evaluate
    (eval.json and its metrics.jsonl line), the gate (decision.json) and the export (model.keras)."""

    model: Path
    eval: Path
    gate: Path
    export: Path

    @classmethod
    def of(cls, model_dir: Path, eval_dir: Path | None = None, gate_dir: Path | None = None,
           export_dir: Path | None = None) -> StageDirs:
        """Each folder not given is model_dir: `rn50` keeps every stage's files beside the model."""
        model = Path(model_dir)
        return cls(model, *(Path(d) if d is not None else model for d in (eval_dir, gate_dir, export_dir)))


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


def latest_checkpoint(model_dir: Path) -> dict[str, Source]:
    """The newest TF checkpoint only (older ones are training history, not the model), with a
    `checkpoint` index naming just it, so `tf.train.latest_checkpoint` works on the pulled copy."""
    directory = model_dir / CHECKPOINT_DIR
    if not _regular(model_dir, f"{CHECKPOINT_DIR}/checkpoint"):
        raise PublishError(f"{directory}/checkpoint: missing; is {model_dir} a trained model directory?")
    state = read_regular(directory / "checkpoint").decode(errors="replace")
    match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state, re.MULTILINE)
    if not match:
        raise PublishError(f"{directory}/checkpoint: names no model_checkpoint_path")
    name = Path(match.group(1)).name
    index = directory / f"{name}.index"
    data = sorted(directory.glob(f"{name}.data-*"))
    if not _regular(model_dir, f"{CHECKPOINT_DIR}/{index.name}") or not data:
        raise PublishError(f"{directory}: checkpoint {name} is incomplete (its .index or .data files are missing)")
    index_text = f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n'
    files: dict[str, Source] = {f"{CHECKPOINT_DIR}/checkpoint": index_text.encode()}
    for path in [index, *data]:
        _regular(model_dir, f"{CHECKPOINT_DIR}/{path.name}")
        files[f"{CHECKPOINT_DIR}/{path.name}"] = path
    return files


def _regular(model_dir: Path, name: str) -> bool:
    """Whether the model directory holds name as a regular file, reached through no symlink.

    A link or a FIFO is refused whatever it points to: `metrics.jsonl -> /proc/self/environ` would
    publish the worker's environment.
    """
    try:
        return regular_file(model_dir / name, below=model_dir)
    except NotRegularFile as exc:
        raise PublishError(str(exc)) from None


def _check_name(name: str) -> str:
    try:
        return check_file_name(name)  # the rule pull checks every manifest's names with
    except ValueError as exc:
        raise PublishError(str(exc)) from None


def collect_files(dirs: StageDirs, extra_files: dict[str, Path] | None = None, *,
                  require_export: bool = False) -> dict[str, Source]:
    """What the version holds: name in the version -> local file (or generated bytes).

    A model.keras or saved_model/ older than the latest checkpoint is refused (it is not the model the
    version holds); with `require_export`, so is a missing one (or a missing labels.txt).
    """
    model_dir = dirs.model
    if not model_dir.is_dir():
        raise PublishError(f"{model_dir}: no such model directory")
    files: dict[str, Source] = {}
    for name, stage in REQUIRED.items():
        folder = getattr(dirs, stage)
        if not _regular(folder, name):
            raise PublishError(f"{folder / name}: missing; a version must hold it")
        files[name] = folder / name
    files.update(latest_checkpoint(model_dir))
    # One metrics.jsonl, training's lines then evaluate's, as they are when both write the model directory.
    metrics = [d / METRICS_FILE for d in dict.fromkeys((model_dir, dirs.eval)) if _regular(d, METRICS_FILE)]
    if metrics:
        files[METRICS_FILE] = metrics[0] if len(metrics) == 1 else b"".join(read_regular(m) for m in metrics)
    else:
        log.warning(f"{model_dir / METRICS_FILE}: not there; the version will not hold it")
    for name, stage in OPTIONAL.items():
        folder = getattr(dirs, stage)
        if _regular(folder, name):
            files[name] = folder / name
        elif require_export:
            raise PublishError(f"{folder / name}: missing; {EXPORT_HINT}")
        else:
            log.warning(f"{folder / name}: not there; the version will not hold it")
    index = next(Path(source) for name, source in files.items() if name.endswith(".index"))
    if EXPORT_FILE in files and not is_current(dirs.export / EXPORT_FILE, index):
        raise PublishError(f"{dirs.export / EXPORT_FILE}: older than checkpoint {index.stem}; {EXPORT_HINT}")
    files.update(saved_model_files(dirs.export, index, require=require_export))
    for name, path in (extra_files or {}).items():
        name = _check_name(name)
        if name in files:
            raise PublishError(f"{name!r}: the model directory already provides it")
        if not _regular(Path(path).parent, Path(path).name):
            raise PublishError(f"{path}: no such file (for {name})")
        files[name] = Path(path)
    return files


def saved_model_files(export_dir: Path, checkpoint_index: Path, *, require: bool = False) -> dict[str, Path]:
    """Every file of export_dir's saved_model/ as `saved_model/<path inside it>`, and its labels.txt; {}
    when there is no saved_model/ (PublishError if `require`). One older than the checkpoint is refused,
    as is a link or special file anywhere in it."""
    root = export_dir / SAVED_MODEL_DIR
    if not _regular(export_dir, f"{SAVED_MODEL_DIR}/{SAVED_MODEL_PB}"):  # refuses a link in saved_model/'s place
        if require:
            raise PublishError(f"{root}: missing (no {SAVED_MODEL_PB}); {EXPORT_HINT}")
        log.warning(f"{root}: not there; the version will not hold it")
        return {}
    if not saved_model_current(export_dir, checkpoint_index):
        raise PublishError(f"{root}: older than checkpoint {checkpoint_index.stem}; {EXPORT_HINT}")
    if not _regular(export_dir, LABELS_FILE):  # what its class indices mean: exported with it
        raise PublishError(f"{export_dir / LABELS_FILE}: missing beside {SAVED_MODEL_DIR}/; {EXPORT_HINT}")
    files: dict[str, Path] = {LABELS_FILE: export_dir / LABELS_FILE}

    def unreadable(exc: OSError) -> None:
        raise PublishError(f"{exc.filename}: cannot read it ({exc.strerror})")

    for folder, subfolders, names in os.walk(root, onerror=unreadable):  # never into a linked folder
        links = [d for d in subfolders if os.path.islink(os.path.join(folder, d))]  # refused by _regular
        for name in sorted(names + links):
            relative = (Path(folder) / name).relative_to(export_dir).as_posix()
            if _regular(export_dir, relative):
                files[_check_name(relative)] = export_dir / relative
    return files


def read_decision(gate_dir: Path) -> dict[str, Any]:
    path = gate_dir / DECISION_FILE
    try:
        decision = read_json(path)
    except (FileNotFoundError, ValueError) as exc:
        raise PublishRefused(f"{exc}; run `rn50 gate` first") from None
    verdict = decision.get("verdict")
    if verdict != "pass":
        if decision.get("force_publish") is not True:
            raise PublishRefused(f"{path}: verdict is {verdict!r} and publishing was not forced; not publishing")
        if not str(decision.get("force_reason") or "").strip():
            raise PublishRefused(f"{path}: force_publish without a force_reason; not publishing")
    return decision


def read_evaluation(eval_dir: Path) -> dict[str, Any]:
    try:
        evaluation = read_json(eval_dir / EVAL_FILE)
    except (FileNotFoundError, ValueError) as exc:
        raise PublishError(str(exc)) from None
    top1 = evaluation.get("top1_accuracy")
    if not isinstance(top1, int | float) or not 0 <= top1 <= 100:
        raise PublishError(f"{eval_dir / EVAL_FILE}: top1_accuracy is {top1!r}, expected a percentage")
    return eval_summary(evaluation)  # the per-class lists stay in the version's eval.json and report


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


def publish_model(
    model_dir: Path,
    *,
    eval_dir: Path | None = None,
    gate_dir: Path | None = None,
    export_dir: Path | None = None,
    client: Any,
    bucket: str,
    prefix: str = PREFIX.default,
    model: str = MODEL,
    run_id: str | None = None,
    lineage: dict[str, Any] | None = None,
    extra_files: dict[str, Path] | None = None,
    dvc_repo: Path | None = None,
    dvc_prefix: str | None = "dvc",
    code_repo: Path | None = None,
    data_dvc: Path | None = None,
    transfer: Transfer | None = None,
    require_export: bool = False,
    cost: dict[str, Any] | None = None,
) -> PublishResult:
    """Publish model_dir as `s3://{bucket}/{prefix}/{model}/{version}/`; see the module docstring.

    eval.json, decision.json and model.keras come from eval_dir, gate_dir and export_dir when given
    (a run workspace's folders), else from model_dir.

    `lineage` may give dataset_version, code_version, dag_id, run_id, hosts, num_gpus and any other
    JSON-able facts; what it leaves out comes from `data_dvc` (default `code_repo/data.dvc`, `code_repo`
    defaulting to this project's checkout), config.json's trainer record (the code version of the code that
    trained) and Airflow's environment. `dvc_prefix=None` skips
    the DVC remote (and then no pointer can be written). `require_export`: refuse a model directory
    without model.keras (the Airflow task does; the CLI may publish without it). `cost`: the run's
    pipeline.cost record, into the manifest's "cost".
    """
    started = time.perf_counter()
    dirs = StageDirs.of(model_dir, eval_dir, gate_dir, export_dir)
    transfer = transfer or Transfer()
    decision = read_decision(dirs.gate)  # first: a model the gate failed is refused whatever else is wrong
    files = collect_files(dirs, extra_files, require_export=require_export)
    evaluation = read_evaluation(dirs.eval)
    config = read_json(dirs.model / "config.json")
    if dvc_repo is not None:
        if dvc_prefix is None:
            raise PublishError("a DVC pointer needs the DVC remote; dvc_prefix is None")
        dvc_pointer.check_repo(Path(dvc_repo), bucket, dvc_prefix)
    resolved = resolve_lineage(lineage, code_repo=Path(code_repo or PROJECT_ROOT), data_dvc=data_dvc, config=config)
    run_id = run_id or default_run_id(dirs.model, files)

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
            evaluation=evaluation, decision=decision, config=config, lineage=resolved, dvc=dvc_info,
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
