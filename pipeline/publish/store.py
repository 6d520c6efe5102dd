"""The S3 client and the few operations the registry is built from, each with retries and one-line errors.

Any S3-compatible endpoint works (AWS, MinIO, a local moto server). Credentials, region and endpoint
come from the standard AWS environment and config files unless given explicitly; an Airflow task
passes a client made from its connection instead.

Two layers of retries: botocore's standard mode retries each HTTP request a few times with a short
jittered backoff (connection errors, 5xx, throttling), and `Store.call` retries the whole operation
with a longer exponential backoff, so an endpoint that is down for seconds (a restart, a network
blip) does not fail a publish that took hours of training to reach. Both are bounded; after them the
error is one line naming the operation and the object, never the credentials.

A retried write may already have succeeded (the response was lost). Every write here is conditional,
so such a retry fails with PreconditionFailed, and the callers treat that as "check whether the
existing object is ours", never as an error by itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.publish.redact import redact, register_secret

log = logging.getLogger(__name__)

# Error codes worth another try: S3's throttling and server-side failures.
RETRYABLE_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "RequestTimeout", "InternalError", "ServiceUnavailable", "OperationAborted", "BadGateway",
})
NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchUpload"})
# 409 ConditionalRequestConflict: another conditional write to the key is in flight; for our callers it
# means the same as 412: re-read and decide.
PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
DENIED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                          "InvalidToken", "403"})
MAX_COPY_OBJECT = 5 * 1024**3  # CopyObject's limit; larger objects are copied part by part
# The registry's own JSON objects (manifest, claim, latest.json) are kilobytes; anyone who can write to the
# bucket could put gigabytes there, and a read must not take them into memory.
MAX_JSON_BYTES = 1024 * 1024


class StoreError(RuntimeError):
    """An S3 operation failed for good; the message is one line without credentials."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class NotFound(StoreError):
    """The key (or multipart upload) does not exist."""


class PreconditionFailed(StoreError):
    """A conditional write lost: the key exists (IfNoneMatch) or changed (IfMatch)."""


class InvalidObject(StoreError):
    """The object is not what it must be (too large, not JSON); `etag` identifies the bad version of it."""

    def __init__(self, message: str, *, etag: str | None = None) -> None:
        super().__init__(message)
        self.etag = etag


def parse_json(body: bytes, uri: str, etag: str | None = None) -> Any:
    """JSON from a registry object, or one line naming it."""
    import json

    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested deeper than the parser goes
        raise InvalidObject(f"{uri}: not valid JSON ({' '.join(str(exc).split())[:200]})", etag=etag) from None


@dataclass(frozen=True)
class RetryPolicy:
    """Whole-operation retries on top of botocore's per-request ones."""

    attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 20.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """RN50_S3_RETRIES and RN50_S3_BACKOFF_S tune it without code (tests make it fast)."""
        return cls(
            attempts=max(1, int(os.environ.get("RN50_S3_RETRIES", cls.attempts))),
            backoff_s=float(os.environ.get("RN50_S3_BACKOFF_S", cls.backoff_s)),
        )

    def delay(self, attempt: int) -> float:
        # Full jitter halves the herd when several publishers hit the same outage.
        return min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)


def make_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    max_attempts: int | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 120.0,
    max_pool_connections: int = 32,
) -> Any:
    """A boto3 S3 client; None means the standard AWS environment/config (AWS_ENDPOINT_URL included).

    `max_attempts` (default RN50_S3_MAX_ATTEMPTS or 5) is botocore's per-request total.
    """
    import boto3
    from botocore.config import Config

    register_secret(access_key)
    register_secret(secret_key)
    attempts = max_attempts or int(os.environ.get("RN50_S3_MAX_ATTEMPTS", "5"))
    config = Config(
        retries={"total_max_attempts": max(1, attempts), "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
        # Every body we send carries its own x-amz-checksum (SHA256 for model files, CRC32 for the rest),
        # and that header is signed; signing the payload as well would cost one more sha256 pass over
        # every byte on plain-HTTP endpoints, where botocore otherwise forces it.
        s3={"payload_signing_enabled": False},
    )
    # A session of our own: boto3's default session is not safe to share between threads.
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def _is_retryable(exc: BaseException) -> bool:
    from botocore.exceptions import (
        ClientError,
        HTTPClientError,
        IncompleteReadError,
        ResponseStreamingError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    # ConnectionError: refused, DNS, connect timeout; HTTPClientError: reset, read timeout, closed mid-response.
    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError | ResponseStreamingError):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error.get("Code") in RETRYABLE_CODES or status >= 500 or status == 429
    return False


def _reason(exc: BaseException) -> tuple[str, str | None]:
    """(one-line reason, S3 error code or None)."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
        message = error.get("Message") or ""
        return (f"{code}: {message}" if message else code), code
    return " ".join(str(exc).split()) or type(exc).__name__, None


class Store:
    """One bucket through one client, with the retry policy and error translation applied to every call."""

    def __init__(self, client: Any, bucket: str, retry: RetryPolicy | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.retry = retry or RetryPolicy.from_env()

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def _fail(self, action: str, key: str, exc: BaseException, tries: int) -> StoreError:
        reason, code = _reason(exc)
        where = self.uri(key) if key else self.uri()
        if code == "NoSuchBucket":
            return StoreError(redact(f"{self.uri()}: no such bucket", self.client), code=code)
        if code in NOT_FOUND_CODES:
            return NotFound(redact(f"{action} {where}: not found", self.client), code=code)
        if code in PRECONDITION_CODES:
            return PreconditionFailed(redact(f"{action} {where}: precondition failed ({code})", self.client), code=code)
        if code in DENIED_CODES:
            message = f"{action} {where}: access denied ({code}); check the AWS credentials and the bucket policy"
            return StoreError(redact(message, self.client), code=code)
        after = f"gave up after {tries} tries: " if tries > 1 else ""
        return StoreError(redact(f"{action} {where}: {after}{reason}", self.client), code=code)

    def call(self, action: str, key: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """fn(**kwargs) with the retry policy; botocore errors become StoreError subclasses."""
        from botocore.exceptions import BotoCoreError, ClientError

        attempts = max(1, self.retry.attempts)
        for attempt in range(attempts):
            try:
                return fn(**kwargs)
            except (BotoCoreError, ClientError) as exc:
                if not _is_retryable(exc) or attempt == attempts - 1:
                    raise self._fail(action, key, exc, attempt + 1) from None
                delay = self.retry.delay(attempt)
                log.warning(redact(f"{action} {self.uri(key)}: {_reason(exc)[0]}; retry {attempt + 2}/{attempts} "
                                   f"in {delay:.1f} s", self.client))
                time.sleep(delay)
        raise AssertionError("unreachable")

    # -- reads -----------------------------------------------------------------------------------

    def check_bucket(self) -> None:
        try:
            self.call("head bucket", "", self.client.head_bucket, Bucket=self.bucket)
        except NotFound:
            raise StoreError(f"{self.uri()}: no such bucket", code="NoSuchBucket") from None

    def head(self, key: str, *, checksums: bool = False) -> dict[str, Any] | None:
        kwargs = {"ChecksumMode": "ENABLED"} if checksums else {}
        try:
            return self.call("head", key, self.client.head_object, Bucket=self.bucket, Key=key, **kwargs)
        except NotFound:
            return None

    def get_bytes(self, key: str, *, max_bytes: int | None = None) -> tuple[bytes, str]:
        """(body, ETag); NotFound if missing. The body is read inside the retry, so a reset mid-body retries.

        With max_bytes, a larger object is InvalidObject, and no more than max_bytes + 1 of it is read.
        """

        def read() -> tuple[bytes, str]:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            body, etag = response["Body"], response["ETag"]
            if max_bytes is None:
                return body.read(), etag
            size = response.get("ContentLength", 0)
            with contextlib.closing(body):  # closed unread when too large: the connection is dropped, not drained
                data = b"" if size > max_bytes else body.read(max_bytes + 1)
            if size > max_bytes or len(data) > max_bytes:
                raise InvalidObject(f"{self.uri(key)}: larger than the {max_bytes} bytes a registry JSON object "
                                    "may have; not reading it", etag=etag)
            return data, etag

        return self.call("get", key, read)

    def get_json(self, key: str) -> tuple[Any, str | None]:
        """(parsed JSON, ETag), or (None, None) when the key does not exist; InvalidObject if too large or not JSON."""
        try:
            body, etag = self.get_bytes(key, max_bytes=MAX_JSON_BYTES)
        except NotFound:
            return None, None
        return parse_json(body, self.uri(key), etag), etag

    def stream(self, key: str) -> Any:
        """The body of `key` as a botocore stream; the caller reads, hashes and retries as a whole."""
        return self.call("get", key, self.client.get_object, Bucket=self.bucket, Key=key)["Body"]

    def list_prefixes(self, prefix: str) -> list[str]:
        """The "directories" directly under prefix (which ends with '/')."""
        found: list[str] = []
        for page in self._pages("list", prefix, Prefix=prefix, Delimiter="/"):
            found += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        return found

    def list_keys(self, prefix: str) -> dict[str, int]:
        """key -> size of every object under prefix."""
        found: dict[str, int] = {}
        for page in self._pages("list", prefix, Prefix=prefix):
            found.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return found

    def _pages(self, action: str, prefix: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self.call(action, prefix, self.client.list_objects_v2, Bucket=self.bucket, **kwargs, **extra)
            yield page
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def list_uploads(self, prefix: str) -> list[dict[str, Any]]:
        """In-progress multipart uploads under prefix: dicts with Key, UploadId, Initiated."""
        uploads: list[dict[str, Any]] = []
        markers: dict[str, str] = {}
        while True:
            page = self.call("list uploads", prefix, self.client.list_multipart_uploads,
                             Bucket=self.bucket, Prefix=prefix, **markers)
            uploads += page.get("Uploads", [])
            if not page.get("IsTruncated"):
                return uploads
            markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    def list_parts(self, key: str, upload_id: str) -> dict[int, dict[str, Any]]:
        parts: dict[int, dict[str, Any]] = {}
        marker = 0
        while True:
            page = self.call("list parts", key, self.client.list_parts, Bucket=self.bucket, Key=key,
                             UploadId=upload_id, PartNumberMarker=marker)
            parts.update({p["PartNumber"]: p for p in page.get("Parts", [])})
            if not page.get("IsTruncated"):
                return parts
            marker = page["NextPartNumberMarker"]

    # -- writes ----------------------------------------------------------------------------------

    def put_new(self, key: str, data: bytes, *, sha256_b64: str, metadata: dict[str, str] | None = None,
                content_type: str = "application/octet-stream") -> str:
        """Create key, never overwrite it (IfNoneMatch="*"); PreconditionFailed if it exists. Returns the ETag."""
        response = self.call(
            "put", key, self.client.put_object, Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*",
            ChecksumSHA256=sha256_b64, Metadata=metadata or {}, ContentType=content_type,
        )
        return response["ETag"]

    def put_swap(self, key: str, data: bytes, *, etag: str | None, sha256_b64: str) -> str:
        """Compare-and-swap: replace key only if its ETag is still `etag` (create only if absent when None)."""
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            response = self.call("put", key, self.client.put_object, Bucket=self.bucket, Key=key, Body=data,
                                 ChecksumSHA256=sha256_b64, ContentType="application/json", **condition)
        except NotFound:  # IfMatch on a key deleted meanwhile: the swap lost like any other
            raise PreconditionFailed(f"put {self.uri(key)}: changed meanwhile", code="NoSuchKey") from None
        return response["ETag"]

    def create_upload(self, key: str, metadata: dict[str, str] | None = None) -> str:
        response = self.call("create multipart upload", key, self.client.create_multipart_upload,
                             Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256", Metadata=metadata or {})
        return response["UploadId"]

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes, sha256_b64: str) -> str:
        response = self.call(f"upload part {number} of", key, self.client.upload_part, Bucket=self.bucket,
                             Key=key, UploadId=upload_id, PartNumber=number, Body=data, ChecksumSHA256=sha256_b64)
        return response["ETag"]

    def complete_upload(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        """Complete, but only if key does not exist yet: a multipart upload obeys immutability too."""
        self.call("complete multipart upload", key, self.client.complete_multipart_upload, Bucket=self.bucket,
                  Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*")

    def abort_upload(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(NotFound):  # already completed or aborted
            self.call("abort multipart upload", key, self.client.abort_multipart_upload, Bucket=self.bucket,
                      Key=key, UploadId=upload_id)

    def copy(self, source_key: str, key: str, size: int) -> None:
        """Server-side copy: the bytes never travel through this machine.

        The copy gets a whole-object checksum of its own: left to the store, a copy of a multipart object
        may carry the source's composite checksum without its "-N" mark (moto does), and clients that
        validate responses, like DVC's s3fs, then reject every download of it. CRC32, because the store
        computes it from bytes it already holds (against copy errors, not tampering; DVC objects are
        named by their md5, and `rn50 pull` checks the version's own objects by sha256).
        """
        if size <= MAX_COPY_OBJECT:
            self.call("copy to", key, self.client.copy_object, Bucket=self.bucket, Key=key,
                      CopySource={"Bucket": self.bucket, "Key": source_key}, ChecksumAlgorithm="CRC32")
            return
        part = max(512 * 1024**2, -(-size // 10_000))
        upload_id = self.call("create multipart upload", key, self.client.create_multipart_upload,
                              Bucket=self.bucket, Key=key)
        try:
            parts = []
            for number, start in enumerate(range(0, size, part), 1):
                end = min(size, start + part) - 1
                response = self.call(f"copy part {number} to", key, self.client.upload_part_copy,
                                     Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                     CopySource={"Bucket": self.bucket, "Key": source_key},
                                     CopySourceRange=f"bytes={start}-{end}")
                parts.append({"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]})
            self.call("complete multipart upload", key, self.client.complete_multipart_upload, Bucket=self.bucket,
                      Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            self.abort_upload(key, upload_id)
            raise
