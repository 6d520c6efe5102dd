"""NVIDIA's checkpoint where RN50_NGC_CHECKPOINT names it: what it is by content, and its download from S3.

No TensorFlow here: check_changes (the default queue) compares the identity with the champion's start.

The identity (`identity`) is what the import cache is keyed by and what config.json's `init` record and
the lineage compare, so a checkpoint replaced at the same path or URI is a new checkpoint, never the old
import:

- a path: the sha256 of every file of the directory (or, for a checkpoint prefix, of the files beside
  it that the import reads), hashed on every use;
- `s3://BUCKET/KEY`: every object under KEY/, by name, size and ETag, from one listing on every use. Not
  sha256: that would download the whole checkpoint (hundreds of MB) for every check_changes and every
  use of the cache. S3 gives an object a new ETag whenever it is written with other bytes (its MD5, or
  for a multipart upload the MD5 of its parts' MD5s), so a replaced, added or deleted object changes the
  listing; the same bytes uploaded in other parts only cost an import more. The download is checked
  against that same listing (`download`), so the files imported are the ones the identity names.

Every key that becomes a local file is a plain relative name (the registry's rule,
pipeline.publish.registry.check_relative_name); keys ending in '/' ("folders", as the S3 console makes
them) hold no file and are skipped.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from pipeline import settings
from pipeline.contracts.registry import check_relative_name
from pipeline.files import sha256_file, staging_dir
from pipeline.publish.store import Store, make_client

# NVIDIA's unzipped checkpoint is a few hundred MB (25.6 M weights, their Momentum slots, the graph): the
# cap on what a download may write, whatever the bucket holds under the key.
MAX_CHECKPOINT_BYTES = 4 * 1024**3


class NgcSourceError(ValueError):
    """RN50_NGC_CHECKPOINT names nothing usable; the message is one line naming it (and the key or file)."""


def _where(source: str) -> str:
    return f"{settings.NGC_CHECKPOINT.name}={source}"


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key.strip("/"):
        raise NgcSourceError(f"{_where(uri)}: not s3://BUCKET/KEY (the unzipped checkpoint directory's key)")
    return bucket, key.rstrip("/") + "/"


def _store(bucket: str) -> Any:
    return Store(make_client(), bucket)  # the standard AWS environment, on every queue alike


def list_objects(uri: str, *, max_bytes: int = MAX_CHECKPOINT_BYTES) -> dict[str, dict[str, Any]]:
    """name (below KEY/) -> {"size", "etag"} of every object under s3://BUCKET/KEY/, each name checked."""
    bucket, prefix = _split(uri)
    try:
        listed = _store(bucket).list_objects(prefix)
    except Exception as exc:  # StoreError and friends: one line
        raise NgcSourceError(f"{_where(uri)}: {' '.join(str(exc).split())}") from None
    objects: dict[str, dict[str, Any]] = {}
    for key, entry in sorted(listed.items()):
        if key.endswith("/"):
            continue
        try:
            objects[check_relative_name(key[len(prefix):])] = entry
        except ValueError as exc:
            raise NgcSourceError(f"{_where(uri)}: key {key!r}: {exc}; refusing the checkpoint") from None
    if not objects:
        raise NgcSourceError(f"{_where(uri)}: no objects under it")
    if (total := sum(e["size"] for e in objects.values())) > max_bytes:
        raise NgcSourceError(f"{_where(uri)}: {total} bytes under it, more than the {max_bytes} a checkpoint "
                             "may have; refusing to download it")
    return objects


def _local_files(source: str) -> dict[str, Path]:
    """name -> path of the files a local checkpoint consists of: a directory's, or a prefix's beside it."""
    path = Path(source)
    if path.is_dir():
        return {str(p.relative_to(path)): p for p in sorted(path.rglob("*")) if p.is_file()}
    # A prefix (ckpt/model.ckpt-1000): its .index, .data-* and .meta, and the graph.pbtxt the import checks.
    found = {p.name: p for p in sorted(path.parent.glob(f"{path.name}.*")) if p.is_file()}
    if found and (path.parent / "graph.pbtxt").is_file():
        found["graph.pbtxt"] = path.parent / "graph.pbtxt"
    return found


def identity(source: str) -> dict[str, Any]:
    """What the checkpoint at source is by content (the module docstring): {"objects": {name: {"size",
    "etag"}}} for s3://, {"sha256": {name: hex}} for a path. NgcSourceError when there is none to name."""
    if source.startswith("s3://"):
        return {"objects": list_objects(source)}
    files = _local_files(source)
    if not files:
        raise NgcSourceError(f"{_where(source)}: no such checkpoint directory or prefix, or no files in it")
    try:
        return {"sha256": {name: sha256_file(p) for name, p in files.items()}}
    except OSError as exc:
        raise NgcSourceError(f"{_where(source)}: {exc.filename}: {exc.strerror}") from None


def download(uri: str, objects: dict[str, dict[str, Any]], folder: Path) -> Path:
    """Every object `list_objects(uri)` listed into folder (new), each checked against its listing.

    Files are streamed into a new staging directory beside folder (each a new file, never through a
    symlink: `Store.download`), no more of each than its listed size; an object whose size or ETag is not
    the listing's (replaced, truncated, grown since it was listed) fails the whole download. Only a
    complete one is renamed to folder.
    """
    bucket, prefix = _split(uri)
    store = _store(bucket)
    folder = Path(folder)
    staging = staging_dir(folder.parent, f".{folder.name}.partial-")
    try:
        for name, entry in objects.items():
            key = prefix + name
            target = staging / name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)  # below our own new directory: names checked
                got = store.download(key, target, max_bytes=entry["size"], etag=entry["etag"])
            except Exception as exc:  # StoreError, InvalidObject (another ETag), OSError: one line
                raise NgcSourceError(f"{_where(uri)}: key {key!r}: {' '.join(str(exc).split())}") from None
            if got.size != entry["size"]:
                raise NgcSourceError(f"{_where(uri)}: key {key!r}: {'more' if got.size > entry['size'] else got.size} "
                                     f"bytes, listed as {entry['size']}; changed while it was downloaded")
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
