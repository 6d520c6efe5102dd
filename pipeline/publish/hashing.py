"""Digests of a file: sha256 (what the manifest promises), md5 (what DVC addresses it by), and the
per-part SHA256 checksums S3 verifies a multipart upload with.

Hashing is most of the CPU a publish spends, so the upload path hashes while it sends
(`StreamHasher`), on lanes of their own: hashlib releases the GIL, so sha256 and md5 run on two
cores while the network threads wait on sockets.
"""

from __future__ import annotations

import base64
import hashlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pipeline.files import open_regular

CHUNK = 8 * 1024 * 1024
MAX_QUEUED = 8  # chunks a lane may fall behind the reader


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def sha256_b64(data: bytes) -> str:
    return b64(hashlib.sha256(data).digest())


def composite_sha256(parts_b64: list[str] | tuple[str, ...]) -> str:
    """S3's checksum of a multipart object: the sha256 of the parts' sha256 digests, concatenated."""
    return b64(hashlib.sha256(b"".join(base64.b64decode(p) for p in parts_b64)).digest())


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str  # hex
    md5: str | None  # hex; only computed when the files go to DVC, which addresses them by it
    parts: tuple[str, ...] = ()  # base64 SHA256 of each multipart part; empty for a single put

    @property
    def sha256_b64(self) -> str:
        return b64(bytes.fromhex(self.sha256))


def digest_bytes(data: bytes, *, md5: bool = True) -> FileDigest:
    return FileDigest(len(data), hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest() if md5 else None)


def digest_file(path: Path, part_size: int | None = None, *, md5: bool = True) -> FileDigest:
    """One read of the file; `part_size` also yields the part checksums a multipart upload of it has."""
    sha, md5_hash, parts, size = hashlib.sha256(), hashlib.md5() if md5 else None, [], 0
    with open_regular(path) as f:  # a symlink swapped in after publish checked the file is refused
        while chunk := f.read(part_size or CHUNK):
            size += len(chunk)
            sha.update(chunk)
            if md5_hash is not None:
                md5_hash.update(chunk)
            if part_size:
                parts.append(sha256_b64(chunk))
    return FileDigest(size, sha.hexdigest(), md5_hash.hexdigest() if md5_hash else None, tuple(parts))


class StreamHasher:
    """sha256 (and md5) of a stream of chunks, each on its own thread; `update` returns at once."""

    def __init__(self, *, md5: bool = True) -> None:
        self._hashes = [hashlib.sha256()] + ([hashlib.md5()] if md5 else [])
        self.size = 0
        # One worker per lane keeps each digest's chunks in order.
        self._lanes = [ThreadPoolExecutor(1, thread_name_prefix=h.name) for h in self._hashes]
        self._pending: deque[Future] = deque()

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        while len(self._pending) > len(self._lanes) * MAX_QUEUED:  # bound the chunks read but not yet hashed
            self._pending.popleft().result()
        for lane, digest in zip(self._lanes, self._hashes, strict=True):
            self._pending.append(lane.submit(digest.update, chunk))

    def close(self) -> None:
        for lane in self._lanes:
            lane.shutdown(wait=True)

    def digest(self, parts: tuple[str, ...] = ()) -> FileDigest:
        self.close()
        md5 = self._hashes[1].hexdigest() if len(self._hashes) > 1 else None
        return FileDigest(self.size, self._hashes[0].hexdigest(), md5, parts)
