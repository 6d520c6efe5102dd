"""Putting one file into a version: never overwriting, resuming what an earlier attempt left.

Small files are one conditional PUT carrying their sha256 (as a checked SHA256 checksum and as
metadata). Large files are multipart uploads with a SHA256 checksum per part, completed with
IfNoneMatch="*" so that even the last step cannot replace an object. The file is read once: each
part is hashed by the thread that sends it, while the whole-file sha256 and md5 are computed on
lanes of their own (`StreamHasher`).

When an attempt dies mid-upload (SIGKILL, a lost node), its multipart upload stays on the server. The
next attempt at the same version finds it, keeps every part whose checksum (or MD5 ETag) matches the
local bytes, sends the rest and completes it; extra stale uploads of the key are aborted. When an
attempt fails in a way it can see (an exception), it aborts its own upload before raising.

Why not boto3's managed transfer (`upload_file`, s3transfer): it cannot carry this protocol. Its
ExtraArgs have no IfNoneMatch (s3transfer 0.19 rejects it: "Invalid extra_args key"), so its final
PutObject or CompleteMultipartUpload could replace a published object; and it cannot resume the
multipart upload a killed attempt left. Each request here still gets botocore's retries.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.files import open_regular, read_regular
from pipeline.publish.hashing import FileDigest, StreamHasher, composite_sha256, digest_bytes, digest_file, sha256_b64
from pipeline.publish.store import NotFound, PreconditionFailed, Store, StoreError

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MAX_PARTS = 10_000  # S3's limit per multipart upload
MIN_PART = 5 * MIB  # S3's minimum for every part but the last


class ConflictError(RuntimeError):
    """An object already in the version holds different bytes than this publish would write."""


@dataclass(frozen=True)
class Transfer:
    """How files travel: above `threshold` bytes, in `part_size` parts, `concurrency` parts at once."""

    threshold: int = 16 * MIB
    part_size: int = 8 * MIB
    concurrency: int = 8

    def __post_init__(self) -> None:
        if self.part_size < MIN_PART:
            raise ValueError(f"part_size must be at least {MIN_PART} bytes (S3's minimum), not {self.part_size}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {self.concurrency}")

    def part_size_for(self, size: int) -> int:
        """The configured part size, grown (in whole MiB) where the file would need over 10,000 parts."""
        needed = -(-size // MAX_PARTS)
        return max(self.part_size, -(-needed // MIB) * MIB)


Source = Path | bytes


def source_size(source: Source) -> int:
    return len(source) if isinstance(source, bytes) else source.stat().st_size


class Uploader:
    def __init__(self, store: Store, transfer: Transfer, part_pool: ThreadPoolExecutor, *, md5: bool = True) -> None:
        self.store = store
        self.transfer = transfer
        self.part_pool = part_pool
        self.md5 = md5  # DVC addresses files by md5; without DVC, skipping it saves a third of the hashing
        # Set when the publish fails elsewhere (or is interrupted): uploads in flight stop at their next part
        # instead of sending the rest of a large file nobody will use now.
        self.stop = threading.Event()

    # -- checking what is there ------------------------------------------------------------------

    def local_digest(self, source: Source) -> FileDigest:
        if isinstance(source, bytes):
            return digest_bytes(source, md5=self.md5)
        size = source.stat().st_size
        part_size = self.transfer.part_size_for(size) if size >= self.transfer.threshold else None
        return digest_file(source, part_size, md5=self.md5)

    def verify_existing(self, key: str, digest: FileDigest) -> None:
        """Raise ConflictError unless the object at key holds exactly the bytes `digest` describes.

        Cheapest evidence first: our sha256 metadata, then S3's own checksum, and only when neither
        decides, the bytes themselves.
        """
        head = self.store.head(key, checksums=True)
        if head is None:
            raise ConflictError(f"{self.store.uri(key)}: vanished while being checked")
        if head["ContentLength"] != digest.size:
            raise ConflictError(f"{self.store.uri(key)} exists with {head['ContentLength']} bytes, the local file "
                                f"has {digest.size}")
        recorded = (head.get("Metadata") or {}).get("sha256")
        if recorded:
            if recorded != digest.sha256:
                raise ConflictError(f"{self.store.uri(key)} exists with sha256 {recorded}, the local file has "
                                    f"{digest.sha256}")
            return
        checksum = (head.get("ChecksumSHA256") or "").split("-")[0]
        if checksum and checksum in (digest.sha256_b64, composite_sha256(digest.parts) if digest.parts else None):
            return

        def hash_body(response: dict[str, Any]) -> Any:
            sha = hashlib.sha256()
            for chunk in response["Body"].iter_chunks(1024 * 1024):
                sha.update(chunk)
            return sha

        sha = self.store.read(key, hash_body)
        if sha.hexdigest() != digest.sha256:
            raise ConflictError(f"{self.store.uri(key)} exists with sha256 {sha.hexdigest()}, the local file has "
                                f"{digest.sha256}")

    # -- putting ---------------------------------------------------------------------------------

    def put(self, key: str, source: Source, *, exists: bool, uploads: list[dict[str, Any]]) -> tuple[FileDigest, str]:
        """(digest, what happened: "uploaded" | "resumed" | "present")."""
        if exists:
            digest = self.local_digest(source)
            self.verify_existing(key, digest)
            return digest, "present"
        size = source_size(source)
        if isinstance(source, bytes) or size < self.transfer.threshold:
            data = source if isinstance(source, bytes) else read_regular(source)
            digest = digest_bytes(data, md5=self.md5)
            try:
                self.store.put_new(key, data, sha256_b64=digest.sha256_b64, metadata={"sha256": digest.sha256})
            except PreconditionFailed:  # a concurrent attempt of the same run, or our own retried PUT
                self.verify_existing(key, digest)
                return digest, "present"
            return digest, "uploaded"
        return self._multipart(key, source, size, [u for u in uploads if u["Key"] == key])

    def _resumable(self, key: str, uploads: list[dict[str, Any]]) -> tuple[str | None, dict[int, dict[str, Any]]]:
        """The newest earlier upload of key and its parts; older ones are aborted."""
        uploads = sorted(uploads, key=lambda u: u.get("Initiated") or 0, reverse=True)
        for stale in uploads[1:]:
            self.store.abort_upload(key, stale["UploadId"])
        if not uploads:
            return None, {}
        try:
            return uploads[0]["UploadId"], self.store.list_parts(key, uploads[0]["UploadId"])
        except NotFound:  # completed or aborted meanwhile
            return None, {}

    def _multipart(self, key: str, path: Path, size: int, uploads: list[dict[str, Any]]) -> tuple[FileDigest, str]:
        part_size = self.transfer.part_size_for(size)
        upload_id, earlier = self._resumable(key, uploads)
        if upload_id:
            log.info(f"resuming the multipart upload of {self.store.uri(key)} ({len(earlier)} parts already sent)")
        else:
            upload_id = self.store.create_upload(key)
        hasher = StreamHasher(md5=self.md5)
        futures: list[Future] = []
        in_flight = threading.BoundedSemaphore(self.transfer.concurrency * 2)
        try:
            with open_regular(path) as f:
                number = 0
                while chunk := f.read(part_size):
                    if self.stop.is_set():
                        raise StoreError(f"{self.store.uri(key)}: upload stopped, the publish failed elsewhere")
                    number += 1
                    hasher.update(chunk)
                    in_flight.acquire()
                    future = self.part_pool.submit(self._part, key, upload_id, number, chunk, earlier.get(number))
                    future.add_done_callback(lambda _: in_flight.release())
                    futures.append(future)
                    if any(f.done() and f.exception() for f in futures[-self.transfer.concurrency * 2:]):
                        break  # stop reading; the loop below raises the part's error
            results = [f.result() for f in futures]
            digest = hasher.digest(tuple(r["ChecksumSHA256"] for r in results))
            if digest.size != size:
                raise StoreError(f"{path}: changed while being uploaded ({size} -> {digest.size} bytes)")
            reused = sum(1 for r in results if r.pop("reused"))
            try:
                self.store.complete_upload(key, upload_id, results)
            except PreconditionFailed:  # the key exists: a concurrent attempt of the same run finished first
                self.store.abort_upload(key, upload_id)
                self.verify_existing(key, digest)
                return digest, "present"
            except NotFound:  # our retried completion, whose first try succeeded
                self.verify_existing(key, digest)
            return digest, "resumed" if reused else "uploaded"
        except BaseException:
            hasher.close()
            for future in futures:
                future.cancel()
            for future in futures:
                if not future.cancelled():
                    future.exception()  # wait, so no part lands after the abort
            try:
                self.store.abort_upload(key, upload_id)
            except StoreError as exc:
                log.warning(f"could not abort the multipart upload of {self.store.uri(key)} ({exc}); "
                            "the next attempt resumes or aborts it")
            raise

    def _part(self, key: str, upload_id: str, number: int, chunk: bytes,
              earlier: dict[str, Any] | None) -> dict[str, Any]:
        checksum = sha256_b64(chunk)
        if earlier is not None and earlier.get("Size") == len(chunk):
            etag = str(earlier.get("ETag", "")).strip('"')
            if earlier.get("ChecksumSHA256") == checksum or etag == hashlib.md5(chunk).hexdigest():
                return {"PartNumber": number, "ETag": earlier["ETag"], "ChecksumSHA256": checksum, "reused": True}
        etag = self.store.upload_part(key, upload_id, number, chunk, checksum)
        return {"PartNumber": number, "ETag": etag, "ChecksumSHA256": checksum, "reused": False}


def run_all(pool: ThreadPoolExecutor, jobs: list[Callable[[], Any]], stop: threading.Event | None = None) -> list[Any]:
    """Run jobs on pool; on the first failure, cancel what has not started, set `stop` for what has,
    wait for those, and raise that failure."""
    futures = [pool.submit(job) for job in jobs]
    try:
        return [f.result() for f in futures]
    except BaseException:
        if stop is not None:
            stop.set()
        for future in futures:
            future.cancel()
        for future in futures:
            if not future.cancelled():
                future.exception()
        raise
