"""The S3 client and the few operations the registry is built from, each with one-line errors.

Any S3-compatible endpoint works (AWS, MinIO, a local moto server). `make_client` is the one way this
project makes a client: credentials, region and endpoint come from the standard AWS environment and
config files unless given explicitly (an Airflow task passes its connection's fields,
tasks/connections.py `s3_client`).

One retry layer: botocore's. Its configured retry mode retries each request (connection errors, 5xx,
throttling) with a jittered exponential backoff: AWS_RETRY_MODE and AWS_MAX_ATTEMPTS (or `retry_mode`
and `max_attempts` in ~/.aws/config) choose it, and where neither is set, standard mode with 5 attempts.
After that the error is one line naming the operation and the object, never the credentials. The one
case botocore cannot retry is a GET whose body breaks off after the headers arrived: the body is read
by us, after botocore has returned, so `Store.read` fetches such an object again (its test:
tests/test_publish_faults.py::test_a_body_cut_off_mid_read_is_fetched_again).

A retried write may already have succeeded (the response was lost). Every write here is conditional,
so such a retry fails with PreconditionFailed, and the callers treat that as "check whether the
existing object is ours", never as an error by itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pipeline.redact import redact, register_secret

log = logging.getLogger(__name__)
T = TypeVar("T")

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
# botocore's retries where the user configured none: its own default ("legacy" mode) retries fewer cases.
DEFAULT_RETRY_MODE = "standard"
DEFAULT_MAX_ATTEMPTS = 5


class StoreError(RuntimeError):
    """An S3 operation failed for good; the message is one line without credentials."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class NotFound(StoreError):
    """The key (or multipart upload) does not exist."""


class PreconditionFailed(StoreError):
    """A conditional write lost: the key exists (IfNoneMatch) or changed (IfMatch)."""


@dataclass(frozen=True)
class Downloaded:
    """What `Store.download` wrote: its size in bytes (max_bytes + 1 when the object is longer), sha256, ETag."""

    size: int
    sha256: str
    etag: str


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


def make_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
    profile: str | None = None,
    verify: bool | str | None = None,
    config: Mapping[str, Any] | None = None,
    max_attempts: int | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 120.0,
    max_pool_connections: int = 32,
) -> Any:
    """A boto3 S3 client; None means the standard AWS environment/config (AWS_ENDPOINT_URL included).

    `config` is more botocore Config options (an Airflow connection's `config_kwargs`); they win over
    ours. `max_attempts` (tests) overrides botocore's configured total of attempts per request.
    """
    import boto3
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    for secret in (access_key, secret_key, session_token):
        register_secret(secret)
    core = botocore.session.Session()
    try:
        # A session of our own: boto3's default session is not safe to share between threads.
        session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, aws_session_token=session_token,
            region_name=region, profile_name=profile, botocore_session=core,
        )
        # botocore lets a Config's retries override AWS_RETRY_MODE, AWS_MAX_ATTEMPTS and ~/.aws/config, so
        # ours go only where the user set none; left out, botocore fills them from there.
        retries: dict[str, Any] = {}
        if not (os.environ.get("AWS_RETRY_MODE") or core.get_scoped_config().get("retry_mode")):
            retries["mode"] = DEFAULT_RETRY_MODE
        if max_attempts or core.get_config_variable("max_attempts") is None:
            retries["total_max_attempts"] = max(1, max_attempts or DEFAULT_MAX_ATTEMPTS)
        ours = Config(
            retries=retries,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            # Every body we send carries its own x-amz-checksum (SHA256 for model files, CRC32 for the rest),
            # and that header is signed; signing the payload as well would cost one more sha256 pass over
            # every byte on plain-HTTP endpoints, where botocore otherwise forces it.
            s3={"payload_signing_enabled": False},
        )
        if config:
            ours = ours.merge(Config(**config))
        return session.client("s3", endpoint_url=endpoint_url, config=ours, verify=verify)
    except (BotoCoreError, TypeError, ValueError) as exc:  # an unknown profile, a bad config option or value
        raise StoreError(redact(f"cannot make an S3 client: {' '.join(str(exc).split())}")) from None


def _reason(exc: BaseException) -> tuple[str, str | None]:
    """(one-line reason, S3 error code or None)."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        metadata = exc.response.get("ResponseMetadata", {})
        code = str(error.get("Code") or metadata.get("HTTPStatusCode"))
        message = error.get("Message") or ""
        retries = metadata.get("RetryAttempts") or 0
        after = f" (after {retries} retries)" if retries else ""
        return (f"{code}: {message}" if message else code) + after, code
    return " ".join(str(exc).split()) or type(exc).__name__, None


def _body_broke(exc: BaseException) -> bool:
    """The connection failed while a response body was being read (reset, timeout, short body)."""
    from botocore.exceptions import HTTPClientError, IncompleteReadError

    # ResponseStreamingError and ReadTimeoutError are HTTPClientErrors.
    return isinstance(exc, HTTPClientError | IncompleteReadError)


class Store:
    """One bucket through one client, with error translation applied to every call."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def _fail(self, action: str, key: str, exc: BaseException) -> StoreError:
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
        return StoreError(redact(f"{action} {where}: {reason}", self.client), code=code)

    def call(self, action: str, key: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """fn(**kwargs); botocore errors (after botocore's retries) become StoreError subclasses."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(action, key, exc) from None

    def read(self, key: str, consume: Callable[[dict[str, Any]], T]) -> T:
        """consume(the GetObject response), which reads its body; NotFound if key is missing.

        The one retry outside botocore: botocore retries a request until its response headers arrive, and
        a GET's body is read after that, here, so a connection that breaks off in the middle of the body
        is beyond its retries. Then the object is fetched again (consume starts over), up to the client's
        total of attempts; each new GET has botocore's retries and backoff again.
        """
        attempts = max(1, self.client.meta.config.retries.get("total_max_attempts") or DEFAULT_MAX_ATTEMPTS)
        for attempt in range(1, attempts + 1):
            response = self.call("get", key, self.client.get_object, Bucket=self.bucket, Key=key)
            try:
                return consume(response)
            except Exception as exc:
                if not _body_broke(exc):
                    raise
                if attempt == attempts:
                    after = f"gave up after {attempts} tries: " if attempts > 1 else ""
                    raise StoreError(redact(f"get {self.uri(key)}: {after}{_reason(exc)[0]}", self.client)) from None
                log.warning(redact(f"get {self.uri(key)}: {_reason(exc)[0]}; fetching it again "
                                   f"({attempt + 1}/{attempts})", self.client))
            finally:
                response["Body"].close()
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
        """(body, ETag); NotFound if missing.

        With max_bytes, a larger object is InvalidObject, and no more than max_bytes + 1 of it is read.
        """

        from botocore.exceptions import IncompleteReadError

        def consume(response: dict[str, Any]) -> tuple[bytes, str]:
            body, etag = response["Body"], response["ETag"]
            if max_bytes is None:
                return body.read(), etag
            size = response.get("ContentLength", 0)
            # Closed unread when too large (read's finally): the connection is dropped, not drained.
            data = b"" if size > max_bytes else body.read(max_bytes + 1)
            if size > max_bytes or len(data) > max_bytes:
                raise InvalidObject(f"{self.uri(key)}: larger than the {max_bytes} bytes a registry JSON object "
                                    "may have; not reading it", etag=etag)
            if len(data) < size:  # botocore checks the length only of a read without a limit
                raise IncompleteReadError(actual_bytes=len(data), expected_bytes=size)
            return data, etag

        return self.read(key, consume)

    def download(self, key: str, target: Path, *, max_bytes: int, etag: str | None = None) -> Downloaded:
        """Stream key into target, a new file, hashing as it goes; never more than max_bytes + 1 bytes read.

        target is created with O_EXCL and O_NOFOLLOW: a name that exists, a symlink planted there included,
        fails (FileExistsError) and is left as it is, so no download writes through a link or over a file
        it did not create. A longer object is cut off at max_bytes + 1 (Downloaded.size says so, and the
        caller refuses it): the size a listing or manifest gave is the cap, not the size the GET reports.
        With `etag`, an object whose ETag is another (replaced since it was listed) is InvalidObject before
        its body is read. A body that breaks off is fetched again (`read`), into the same file, from byte 0.
        On a failure the file stays as far as it got: callers download into a staging directory they remove.
        """
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        with os.fdopen(fd, "wb") as f:

            def consume(response: dict[str, Any]) -> Downloaded:
                if etag is not None and response["ETag"] != etag:
                    raise InvalidObject(f"{self.uri(key)}: ETag {response['ETag']}, listed as {etag}; replaced "
                                        "since it was listed", etag=response["ETag"])
                f.seek(0)
                f.truncate()
                digest, written = hashlib.sha256(), 0
                if response.get("ContentLength", 0) > max_bytes:  # closed unread (read's finally): not drained
                    return Downloaded(max_bytes + 1, digest.hexdigest(), response["ETag"])
                for chunk in response["Body"].iter_chunks(1024 * 1024):
                    digest.update(chunk)
                    f.write(chunk)
                    written += len(chunk)
                    if written > max_bytes:
                        break  # longer than the cap: no need to read the rest
                return Downloaded(written, digest.hexdigest(), response["ETag"])

            return self.read(key, consume)

    def get_json(self, key: str) -> tuple[Any, str | None]:
        """(parsed JSON, ETag), or (None, None) when the key does not exist; InvalidObject if too large or not JSON."""
        try:
            body, etag = self.get_bytes(key, max_bytes=MAX_JSON_BYTES)
        except NotFound:
            return None, None
        return parse_json(body, self.uri(key), etag), etag

    def list_prefixes(self, prefix: str) -> list[str]:
        """The "directories" directly under prefix (which ends with '/')."""
        found: list[str] = []
        for page in self._pages("list", prefix, Prefix=prefix, Delimiter="/"):
            found += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        return found

    def list_keys(self, prefix: str) -> dict[str, int]:
        """key -> size of every object under prefix."""
        return {key: entry["size"] for key, entry in self.list_objects(prefix).items()}

    def list_objects(self, prefix: str) -> dict[str, dict[str, Any]]:
        """key -> {"size", "etag"} of every object under prefix."""
        found: dict[str, dict[str, Any]] = {}
        for page in self._pages("list", prefix, Prefix=prefix):
            found.update({o["Key"]: {"size": o["Size"], "etag": o["ETag"]} for o in page.get("Contents", [])})
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
