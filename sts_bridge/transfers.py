"""Uploads, downloads, listing, deletes and presigned URLs for a workspace.

:class:`WorkspaceTransfers` is a mixin of ``Workspace``; it relies only on
the contract written in ``docs/architecture.md`` (``bucket``, ``prefix``,
``endpoint_url``, ``region``, ``addressing_style``, ``verify``,
``credentials()``, ``credentials_for()``, ``s3_client()``).

Transfer engine (why not s3transfer)
------------------------------------
On a small machine the client's CPU per byte decides throughput, and boto3
spends it badly on plain http: botocore SHA-256s every body byte for the
signature *and*, since 1.36, adds a CRC32 (``aws-chunked`` trailer) that
some S3-compatible servers reject; s3transfer then copies the data through
several Python file wrappers. Here every request of a transfer is our own,
signed with :class:`~sts_bridge.presign.Signer` from a fresh
``credentials()`` snapshot (a transfer may outlive one set of STS
credentials) and sent over one urllib3 pool; no boto3 client is built (it
cost about 0.2 CPU-s and 25 MB to import and make):

- uploads: each part is read once with ``os.pread``, hashed once with
  SHA-256 (hashlib releases the GIL) and sent with one ``sendall``, several
  parts at a time; small files go 16 at a time. Create / complete / abort
  multipart, ListMultipartUploads, ListParts and HEAD are small signed
  requests whose XML answers are read with a few regular expressions.
- downloads: the first ranged GET tells the size and ETag (no HEAD); the
  other ranges follow in parallel, each streamed with ``readinto`` into one
  reused buffer per thread and written with ``os.pwrite`` at its offset in a temp file
  that is renamed into place only when complete and checked. Downloads of
  ``DIRECT_IO_MIN_SIZE`` (64 MiB) or more write with ``O_DIRECT`` on Linux
  (whole 1 MiB page-aligned buffers at aligned offsets; the object's odd
  tail, and everything after a refused direct write, through the page
  cache). Why: on the reference VM (Firecracker, virtio-balloon free page
  reporting) writing 1 GiB through the page cache cost 0.16 s of kernel
  time when the freed pages of a previous write were reused at once, but
  0.85-1.6 s in a fresh process (first touch of pages the host had taken
  back; ``copy_folio_from_iter_atomic`` in perf), with no network involved;
  O_DIRECT took 0.07 s of kernel time and 0.45 s wall, every time. The
  price: the file is not left in the page cache, and on a disk slower than
  the network the download waits for the disk.

Listing and deletes still use the workspace's boto3 client.

Integrity
---------
Every PUT and UploadPart carries ``x-amz-content-sha256`` = the real SHA-256
of its body, inside the SigV4 signature. AWS and radosgw recompute it and
refuse the request on mismatch (``XAmzContentSHA256Mismatch``), so every
byte is verified by the server, and the hash cannot be altered in transit
without breaking the signature. (The alternative, ``UNSIGNED-PAYLOAD`` +
``Content-MD5``, costs more CPU here: SHA-256 runs at about 1.7 GB/s with
SHA-NI, MD5 at 0.73 GB/s, measured on the 2-core reference machine.) No SDK
"flexible checksum" headers are sent: they are what breaks older
S3-compatible servers. ``UploadResult.checksum`` is ``sha256:<hex>`` of the
object, or for multipart uploads the composite ``sha256:<hex of SHA-256 of
the part digests>-<parts>`` (AWS's COMPOSITE scheme, in hex).

Downloads check that every range delivers exactly its bytes (a broken
connection resumes from the first missing byte), that the total is the
object's size, that later ranges come from the same object
(``If-Match: <etag>``), and, when the ETag is an MD5 (single-part objects
without SSE-KMS/SSE-C), the MD5 of the data: streamed when the object comes
in one GET, read back from the file otherwise. A multipart ETag (``-N``)
is the MD5 of part MD5s whose part sizes are unknown: it is not compared
(logged at debug level with the reason), the size is.

Resume
------
A multipart upload from a file writes a small 0600 state file
(``<cache dir>/uploads/<hash of endpoint, bucket, key, size, mtime>.json``)
holding the upload id and part size. Run again after the process died, the
upload is found again (state file + ListMultipartUploads confirms it is
still in progress), ListParts gives the stored parts, and each is kept only
when its ETag equals the MD5 of the local bytes of that part; the others are
uploaded again. A failure (an exception) aborts the multipart upload and
removes the state file, so no parts are left behind; only a killed process
(or Ctrl-C) leaves an upload to resume.
"""

from __future__ import annotations

import builtins
import concurrent.futures as cf
import contextlib
import errno
import fnmatch
import functools
import hashlib
import json
import logging
import math
import mimetypes
import os
import random
import re
import stat
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

from sts_bridge.errors import (
    CredentialsError,
    InvalidKeyError,
    NotFoundError,
    PermissionDeniedError,
    StsBridgeError,
    TransferError,
)
from sts_bridge.keys import relative_key, workspace_key, workspace_prefix
from sts_bridge.presign import EMPTY_SHA256, MAX_EXPIRES, CredentialsLike, Signer

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MULTIPART_THRESHOLD",
    "DEFAULT_PART_SIZE",
    "ObjectInfo",
    "PresignClampedWarning",
    "PresignedUrl",
    "ProgressCallback",
    "UploadResult",
    "WorkspaceTransfers",
    "choose_part_size",
    "composite_checksum",
    "matches_filters",
    "parse_duration",
    "upload_to_workspace",
]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Tuned on a 2-core machine against radosgw on the same host (128 MiB
# upload): 8 MiB parts, 4 in flight was fastest (0.42-0.60 s, 0.12 s client
# CPU, vs 0.66-0.93 s and 0.20-0.24 s CPU for boto3's upload_file defaults);
# 32 MiB parts or 2 in flight were not better. 32 MiB in memory at most.
DEFAULT_MULTIPART_THRESHOLD = 16 * MiB
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_CONCURRENCY = 4
# Many small files are latency-bound: more PUTs in flight (one pool).
DEFAULT_SMALL_FILE_CONCURRENCY = 16
DEFAULT_DOWNLOAD_CONCURRENCY = 4
DEFAULT_DOWNLOAD_RANGE = 16 * MiB
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * 1024 * MiB
_ATTEMPTS = 4
_RETRY_STATUS = frozenset({500, 502, 503, 504})

ProgressCallback = Callable[[int, int | None], None]
"""``progress(bytes_done, total_or_None)``; called from worker threads, serialised."""

Source = Union[str, "os.PathLike[str]", IO[bytes], bytes, bytearray, memoryview]


class PresignClampedWarning(UserWarning):
    """A presigned URL lives shorter than asked: the credentials expire first."""


# --------------------------------------------------------------------- results
@dataclass(frozen=True)
class UploadResult:
    """One uploaded object.

    ``key`` is relative to the workspace, ``uri`` is ``s3://bucket/full-key``,
    ``etag`` the server's ETag (without quotes), ``checksum`` the SHA-256
    (``sha256:<hex>``, or ``sha256:<hex>-<parts>`` composite for multipart).
    """

    key: str
    size: int
    etag: str
    checksum: str
    uri: str
    parts: int = 0
    resumed_parts: int = 0


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object (or a common prefix when ``is_prefix``)."""

    key: str
    size: int
    etag: str | None = None
    last_modified: datetime | None = None
    is_prefix: bool = False


@dataclass(frozen=True)
class PresignedUrl:
    """A presigned URL; ``expires_at`` is when it really stops working (UTC)."""

    url: str
    method: str
    key: str
    expires_at: datetime

    def __str__(self) -> str:
        return self.url


# ------------------------------------------------------------- pure helpers
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """``"90"``, ``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` -> whole seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 900, 15m, 1h, 7d)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def choose_part_size(size: int, part_size: int = DEFAULT_PART_SIZE) -> int:
    """The part size for ``size`` bytes: ``part_size`` unless 10,000 parts are not enough."""
    part_size = max(part_size, MIN_PART_SIZE)
    if size > part_size * MAX_PARTS:
        part_size = math.ceil(size / MAX_PARTS / MiB) * MiB
    if part_size > MAX_PART_SIZE:
        raise TransferError(f"{size} bytes is more than S3 can store in one object")
    return part_size


def composite_checksum(part_digests: Sequence[bytes]) -> str:
    """``sha256:<hex>-<n>``: SHA-256 of the concatenated part SHA-256 digests."""
    return f"sha256:{hashlib.sha256(b''.join(part_digests)).hexdigest()}-{len(part_digests)}"


def matches_filters(
    relpath: str, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None
) -> bool:
    """Whether ``relpath`` (posix, relative) passes glob ``include``/``exclude`` patterns.

    A pattern matches the whole relative path (``*`` crosses ``/``) or, when
    it has no ``/``, the file name alone: ``*.tif`` matches ``a/b/c.tif``.
    Excludes win over includes; no includes means everything.
    """
    name = relpath.rsplit("/", 1)[-1]

    def hit(pattern: str) -> bool:
        if fnmatch.fnmatchcase(relpath, pattern):
            return True
        return "/" not in pattern and fnmatch.fnmatchcase(name, pattern)

    if include and not any(hit(p) for p in include):
        return False
    return not (exclude and any(hit(p) for p in exclude))


def guess_content_type(key: str) -> str:
    return mimetypes.guess_type(key, strict=False)[0] or "application/octet-stream"


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            raise TransferError("the file shrank while it was being uploaded")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _read_small(path: Path, size: int) -> bytes:
    """The bytes of a small file expected to hold ``size`` bytes (open, one read, close).

    Asks for one byte more than expected, so a file that grew is seen with
    the same single read (regular files return short only at the end).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, size + 1)
        if len(data) < size:  # shrank, or a short read: read on until the end
            parts = [data]
            while more := os.read(fd, size + 1 - sum(map(len, parts))):
                parts.append(more)
            data = b"".join(parts)
        return data
    finally:
        os.close(fd)


def _strip_etag(etag: str | None) -> str:
    return (etag or "").strip().strip('"')


def _error_code(exc: BaseException) -> tuple[str, int | None]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", "") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status


def _map_error(exc: Exception, what: str) -> StsBridgeError:
    """A botocore error -> our tree (never includes credentials)."""
    code, status = _error_code(exc)
    text = f"{what} failed: {code or type(exc).__name__}" + (f" (HTTP {status})" if status else "")
    if code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
        return CredentialsError(text, hint="the storage credentials expired; try again")
    if status == 403 or code == "AccessDenied":
        return PermissionDeniedError(
            text, status=403, hint="your workspace credentials do not allow this"
        )
    if status == 404 or code in ("NoSuchKey", "NotFound", "NoSuchBucket", "NoSuchUpload"):
        return NotFoundError(text, status=404)
    return TransferError(text)


_OK = frozenset({200})
_READ_BUFFER = 1 * MiB
# Downloads at least this large write with O_DIRECT (Linux), see _Engine.download.
DIRECT_IO_MIN_SIZE: int | None = 64 * MiB
_DIRECT_ALIGN = 4096  # offsets and lengths of O_DIRECT writes (covers 512 and 4K sectors)
_MD5_HEX = re.compile(r"[0-9a-f]{32}")
_local = threading.local()


def _buffer() -> memoryview:
    """This thread's reusable read buffer (one allocation per worker thread)."""
    buf: memoryview | None = getattr(_local, "buf", None)
    if buf is None:
        import mmap

        # anonymous mmap: page-aligned, as O_DIRECT writes need
        buf = _local.buf = memoryview(mmap.mmap(-1, _READ_BUFFER))
    return buf


def _open_direct(path: Path, size: int, step: int) -> int | None:
    """A second, O_DIRECT descriptor on the download's temp file, or ``None``.

    Only for large downloads on Linux whose ranges start on aligned offsets;
    ``None`` where the file system refuses O_DIRECT (tmpfs: EINVAL).
    """
    flag = getattr(os, "O_DIRECT", 0)
    if (
        not flag
        or DIRECT_IO_MIN_SIZE is None
        or size < DIRECT_IO_MIN_SIZE
        or step % _DIRECT_ALIGN
        or _READ_BUFFER % _DIRECT_ALIGN
    ):
        return None
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC | flag)
    except OSError as exc:
        log.debug("no O_DIRECT for %s (%s): buffered writes", path, exc)
        return None


def _pwrite_all(fd: int, view: memoryview, offset: int, what: str) -> None:
    try:
        written = os.pwrite(fd, view, offset)
        while written < len(view):  # regular files write all at once; be safe anyway
            written += os.pwrite(fd, view[written:], offset + written)
    except OSError as exc:  # a local problem (disk full...): not worth a retry
        raise TransferError(f"{what}: writing the file failed: {exc}") from exc


def _file_md5(fd: int, size: int) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    buf = memoryview(bytearray(8 * MiB))
    offset = 0
    while offset < size:
        n = os.preadv(fd, [buf[: min(len(buf), size - offset)]], offset)
        if not n:
            raise TransferError("the downloaded file shrank while it was being checked")
        md5.update(buf[:n])
        offset += n
    return md5.hexdigest()


def _etag_md5(etag: str, headers: Any) -> tuple[str | None, str]:
    """The MD5 the ETag promises, or ``None`` and why the ETag says nothing about the bytes."""
    if not etag:
        return None, "the server sent no ETag"
    if not _MD5_HEX.fullmatch(etag):
        if "-" in etag:
            return None, "multipart ETag (MD5 of the part MD5s, part sizes unknown)"
        return None, f"ETag {etag!r} is not an MD5"
    sse = (headers.get("x-amz-server-side-encryption") or "").lower()
    if sse.startswith("aws:kms") or headers.get("x-amz-server-side-encryption-customer-algorithm"):
        return None, "the ETag of an SSE-KMS or SSE-C object is not its MD5"
    return etag, ""


def _content_range(resp: Any) -> tuple[int, int]:
    """(first byte, total size) from a 206's ``Content-Range: bytes a-b/total``."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+)\s*", resp.headers.get("Content-Range", ""))
    if not match:
        raise TransferError(
            f"the server sent an unusable Content-Range: {resp.headers.get('Content-Range')!r}"
        )
    return int(match.group(1)), int(match.group(2))


def _total_size(resp: Any) -> int:
    if resp.status == 206:
        return _content_range(resp)[1]
    length = resp.headers.get("Content-Length")
    if length is None or not length.isdigit():
        raise TransferError("the server sent no Content-Length for the object")
    return int(length)


def _range_start(resp: Any) -> int:
    return _content_range(resp)[0] if resp.status == 206 else 0


def _xml_text(data: bytes | None, tag: str) -> str:
    """The text of the first ``<tag>`` in a small S3 XML answer ("" when absent)."""
    match = re.search(rb"<" + tag.encode() + rb">([^<]*)</", data or b"")
    if not match:
        return ""
    text = match.group(1).decode("utf-8", "replace")
    if "&" in text:
        import html

        text = html.unescape(text)
    return text


def _xml_blocks(data: bytes | None, tag: str) -> builtins.list[bytes]:
    """The inner XML of every ``<tag>...</tag>`` (not nested in itself) of an S3 answer."""
    t = re.escape(tag.encode())
    return re.findall(rb"<" + t + rb">(.*?)</" + t + rb">", data or b"", re.DOTALL)


class _Progress:
    """Serialises progress callbacks from worker threads (monotonic totals)."""

    def __init__(self, callback: ProgressCallback | None, total: int | None) -> None:
        self._callback = callback
        self.total = total
        self.done = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        if self._callback is None or n == 0:
            return
        with self._lock:
            self.done += n
            self._callback(self.done, self.total)


@dataclass(frozen=True)
class _UploadSpec:
    source: Path | None
    stream: IO[bytes] | None
    key: str  # relative
    full_key: str
    size: int | None
    content_type: str
    metadata: Mapping[str, str]


class _Engine:
    """The data plane of one transfer: signed requests over a urllib3 pool.

    Every request (data and control plane: PUT, UploadPart, create /
    complete / abort multipart, ListMultipartUploads, ListParts, HEAD,
    ranged GETs) is signed with :class:`~sts_bridge.presign.Signer` from a
    fresh ``credentials()`` snapshot, so a transfer longer than one
    credentials lifetime keeps working, and no boto3 client is built.
    """

    def __init__(
        self,
        ws: WorkspaceTransfers,
        *,
        concurrency: int,
        part_size: int,
        multipart_threshold: int,
        resumable: bool,
        small_concurrency: int | None = None,
    ) -> None:
        import urllib3

        self.ws = ws
        self.concurrency = max(1, concurrency)
        self.small_concurrency = max(1, small_concurrency or self.concurrency)
        self.part_size = part_size
        self.threshold = max(multipart_threshold, 1)
        self.resumable = resumable
        self.timeout = urllib3.Timeout(connect=15.0, read=300.0)
        self._signer_lock = threading.Lock()
        self._signer: tuple[CredentialsLike, Signer] | None = None
        # One connection pool for the one host every request of the engine
        # goes to (made with the first signer, which knows the URL): no
        # PoolManager, whose URL parsing and pool lookup cost CPU per request.
        self.http: Any = None
        self._base_len = 0

    def _make_pool(self, base_url: str) -> Any:
        import urllib3

        kwargs: dict[str, Any] = {}
        if base_url.startswith("https:"):
            if self.ws.verify is False:
                kwargs["cert_reqs"] = "CERT_NONE"
            elif isinstance(self.ws.verify, str):
                kwargs["ca_certs"] = self.ws.verify
        self._base_len = len(base_url)
        size = max(self.concurrency, self.small_concurrency) + 1
        return urllib3.connection_from_url(base_url, maxsize=size, block=False, **kwargs)

    def close(self) -> None:
        if self.http is not None:
            self.http.close()

    # ---------------------------------------------------------- plumbing
    def signer(self) -> Signer:
        creds = self.ws.credentials()
        current = self._signer  # a cheap read: same snapshot, same signer
        if current is not None and current[0] is creds:
            return current[1]
        with self._signer_lock:
            if self._signer is None or self._signer[0] is not creds:
                ws = self.ws
                signer = Signer(
                    endpoint_url=ws.endpoint_url,
                    bucket=ws.bucket,
                    region=ws.region,
                    credentials=creds,
                    addressing_style=ws.addressing_style,
                )
                if self.http is None:
                    self.http = self._make_pool(signer.base_url)
                self._signer = (creds, signer)
            return self._signer[1]

    def call(
        self,
        method: str,
        full_key: str,
        what: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        payload_sha256: str | None = None,
        ok: frozenset[int] = _OK,
        stream: bool = False,
    ) -> Any:
        """One signed request, retrying transient failures; returns the urllib3 response.

        Signed with fresh credentials on every attempt. The body is covered
        by ``x-amz-content-sha256`` (computed here unless given). With
        ``stream=True`` the body of an ``ok`` response is left unread (the
        caller reads it and releases the connection). Any other status
        raises (mapped by :func:`_map_error`).
        """
        import urllib3

        if payload_sha256 is None:
            payload_sha256 = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        last = ""
        for attempt in range(_ATTEMPTS):
            if attempt:
                time.sleep(min(8.0, 0.5 * 2**attempt) * (0.5 + random.random()))
            url, signed = self.signer().sign_request(
                method, full_key, query=query, headers=headers, payload_sha256=payload_sha256
            )
            try:
                resp = self.http.urlopen(
                    method,
                    url[self._base_len :],  # the pool knows scheme, host and port
                    body=body,
                    headers=signed,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    timeout=self.timeout,
                    preload_content=not stream,
                )
            except urllib3.exceptions.HTTPError as exc:
                last = f"{type(exc).__name__}"
                log.debug("%s %s attempt %d failed: %s", method, full_key, attempt + 1, last)
                continue
            if resp.status in ok:
                return resp
            data = resp.data if method != "HEAD" else b""
            if stream:
                resp.release_conn()
            code = _xml_text(data, "Code")
            last = f"HTTP {resp.status} {code}".strip()
            if resp.status in _RETRY_STATUS or code in ("RequestTimeout", "SlowDown"):
                continue
            if code in ("ExpiredToken", "InvalidToken") and attempt == 0:
                continue  # credentials() refreshes on the next call when they expired
            raise _map_error(_FakeClientError(code, resp.status), what)
        raise TransferError(f"{what} failed after {_ATTEMPTS} attempts: {last}")

    def put(
        self,
        full_key: str,
        body: bytes,
        sha256_hex: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """PUT ``body`` (signed payload), retrying transient failures; returns the ETag."""
        resp = self.call(
            "PUT",
            full_key,
            f"uploading {full_key!r}",
            query=query,
            headers=headers,
            body=body,
            payload_sha256=sha256_hex,
        )
        return _strip_etag(resp.headers.get("ETag"))

    # ---------------------------------------------------------- single PUT
    def put_object(self, spec: _UploadSpec, body: bytes, progress: _Progress) -> UploadResult:
        sha = hashlib.sha256(body).hexdigest()
        headers = {"Content-Type": spec.content_type}
        headers.update({f"x-amz-meta-{k}": v for k, v in spec.metadata.items()})
        etag = self.put(spec.full_key, body, sha, headers=headers)
        if not etag:
            etag = self.head_etag(spec.full_key)
        progress.add(len(body))
        return UploadResult(
            key=spec.key,
            size=len(body),
            etag=etag,
            checksum=f"sha256:{sha}",
            uri=f"s3://{self.ws.bucket}/{spec.full_key}",
        )

    def head_etag(self, full_key: str) -> str:
        resp = self.call("HEAD", full_key, f"HeadObject {full_key!r}")
        return _strip_etag(resp.headers.get("ETag"))

    def put_part(
        self, full_key: str, upload_id: str, number: int, body: bytes
    ) -> tuple[int, str, bytes]:
        digest = hashlib.sha256(body).digest()
        etag = self.put(
            full_key,
            body,
            digest.hex(),
            query={"partNumber": str(number), "uploadId": upload_id},
        )
        return number, etag, digest

    # ---------------------------------------------------------- multipart
    def create_multipart(self, spec: _UploadSpec) -> str:
        headers = {"Content-Type": spec.content_type}
        headers.update({f"x-amz-meta-{k}": v for k, v in spec.metadata.items()})
        resp = self.call(
            "POST",
            spec.full_key,
            f"starting the upload of {spec.key!r}",
            query={"uploads": ""},
            headers=headers,
        )
        upload_id = _xml_text(resp.data, "UploadId")
        if not upload_id:
            raise TransferError(f"starting the upload of {spec.key!r}: no UploadId in the answer")
        return upload_id

    def abort(self, full_key: str, upload_id: str) -> None:
        try:
            self.call(
                "DELETE",
                full_key,
                f"aborting the upload of {full_key!r}",
                query={"uploadId": upload_id},
                ok=frozenset({200, 204}),
            )
        except Exception as exc:  # the original error matters more
            log.warning("could not abort the multipart upload of %s: %s", full_key, exc)

    def complete(
        self, spec: _UploadSpec, upload_id: str, parts: Mapping[int, tuple[str, bytes]], size: int
    ) -> UploadResult:
        numbers = sorted(parts)
        body = (
            "<CompleteMultipartUpload>"
            + "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>&quot;{parts[n][0]}&quot;</ETag></Part>"
                for n in numbers
            )
            + "</CompleteMultipartUpload>"
        ).encode()
        what = f"completing the upload of {spec.key!r}"
        resp = self.call(
            "POST",
            spec.full_key,
            what,
            query={"uploadId": upload_id},
            headers={"Content-Type": "application/xml"},
            body=body,
        )
        data = resp.data or b""
        if b"<Error>" in data:  # S3 may answer 200 and fail in the body
            code = _xml_text(data, "Code")
            raise _map_error(_FakeClientError(code, 500 if code == "InternalError" else 400), what)
        # radosgw answers CompleteMultipartUpload with an empty ETag.
        etag = _strip_etag(_xml_text(data, "ETag"))
        etag = etag or self.head_etag(spec.full_key)
        return UploadResult(
            key=spec.key,
            size=size,
            etag=etag,
            checksum=composite_checksum([parts[n][1] for n in numbers]),
            uri=f"s3://{self.ws.bucket}/{spec.full_key}",
            parts=len(numbers),
        )

    def run_parts(
        self,
        spec: _UploadSpec,
        upload_id: str,
        jobs: Iterable[tuple[int, Callable[[], bytes]]],
        done: dict[int, tuple[str, bytes]],
        progress: _Progress,
    ) -> None:
        """Upload parts concurrently; at most ``concurrency`` bodies in memory.

        ``jobs`` yields ``(part number, read function)``; the read runs in
        the worker for files (pread) and is already done for streams.
        """
        slots = threading.BoundedSemaphore(self.concurrency)
        failure: list[BaseException] = []

        def work(number: int, read: Callable[[], bytes]) -> tuple[int, str, bytes, int]:
            try:
                if failure:
                    raise TransferError("cancelled")
                body = read()
                n, etag, digest = self.put_part(spec.full_key, upload_id, number, body)
                progress.add(len(body))
                return n, etag, digest, len(body)
            except BaseException as exc:
                failure.append(exc)
                raise
            finally:
                slots.release()

        with cf.ThreadPoolExecutor(self.concurrency, thread_name_prefix="sts-bridge-part") as pool:
            futures: list[cf.Future[tuple[int, str, bytes, int]]] = []
            try:
                for number, read in jobs:
                    slots.acquire()
                    if failure:
                        slots.release()
                        break
                    futures.append(pool.submit(work, number, read))
                for fut in cf.as_completed(futures):
                    n, etag, digest, _ = fut.result()
                    done[n] = (etag, digest)
            except BaseException as exc:
                for fut in futures:
                    fut.cancel()
                # the first failure is the cause; later parts only saw "cancelled"
                if failure and failure[0] is not exc:
                    raise failure[0] from None
                raise

    def upload_stream(self, spec: _UploadSpec, progress: _Progress) -> UploadResult:
        assert spec.stream is not None
        stream = spec.stream
        part_size = max(self.part_size, MIN_PART_SIZE)
        first = _read_exact(stream, part_size)
        second = _read_exact(stream, part_size) if len(first) == part_size else b""
        if not second:
            return self.put_object(spec, first, progress)
        upload_id = self.create_multipart(spec)
        total = [len(first) + len(second)]

        def jobs() -> Iterator[tuple[int, Callable[[], bytes]]]:
            yield 1, lambda: first
            yield 2, lambda: second
            number = 3
            while True:
                chunk = _read_exact(stream, part_size)
                if not chunk:
                    return
                if number > MAX_PARTS:
                    raise TransferError(
                        f"the stream is longer than {MAX_PARTS} parts of {part_size} bytes",
                        hint="pass a larger part_size",
                    )
                total[0] += len(chunk)
                yield number, functools.partial(bytes, chunk)
                number += 1

        done: dict[int, tuple[str, bytes]] = {}
        try:
            self.run_parts(spec, upload_id, jobs(), done, progress)
            return self.complete(spec, upload_id, done, total[0])
        except BaseException as exc:
            self.abort(spec.full_key, upload_id)
            raise _as_transfer_error(exc, spec.key) from exc

    # ---------------------------------------------------------- files
    def upload_file(self, spec: _UploadSpec, progress: _Progress) -> UploadResult:
        assert spec.source is not None and spec.size is not None
        if spec.size < self.threshold:
            data = _read_small(spec.source, spec.size)
            if len(data) != spec.size:
                raise TransferError(f"{spec.source} changed while it was being uploaded")
            return self.put_object(spec, data, progress)
        return self.upload_file_multipart(spec, progress)

    def state_path(self, spec: _UploadSpec, mtime_ns: int) -> Path:
        from sts_bridge.config import default_cache_dir

        ident = "\n".join(
            [self.ws.endpoint_url, self.ws.bucket, spec.full_key, str(spec.size), str(mtime_ns)]
        )
        name = hashlib.sha256(ident.encode()).hexdigest()[:40]
        return default_cache_dir() / "uploads" / f"{name}.json"

    def upload_file_multipart(self, spec: _UploadSpec, progress: _Progress) -> UploadResult:
        from sts_bridge._files import file_lock

        assert spec.source is not None and spec.size is not None
        size = spec.size
        mtime_ns = spec.source.stat().st_mtime_ns
        state_path = self.state_path(spec, mtime_ns)
        try:
            with file_lock(state_path.with_suffix(".lock"), timeout=0.0):
                return self._upload_file_multipart(spec, progress, size, mtime_ns, state_path)
        except TimeoutError as exc:
            raise TransferError(
                f"another process is uploading {spec.source} to {spec.key!r} right now"
            ) from exc

    def _upload_file_multipart(
        self, spec: _UploadSpec, progress: _Progress, size: int, mtime_ns: int, state_path: Path
    ) -> UploadResult:
        from sts_bridge._files import atomic_write

        assert spec.source is not None
        fd = os.open(spec.source, os.O_RDONLY)
        try:
            resumed = self.resume(spec, fd, size, state_path) if self.resumable else None
            done: dict[int, tuple[str, bytes]] = {}
            if resumed is not None:
                upload_id, part_size, done = resumed
                log.info("resuming %s: %d parts already stored", spec.key, len(done))
            else:
                part_size = choose_part_size(size, self.part_size)
                upload_id = self.create_multipart(spec)
                if self.resumable:
                    state = {
                        "version": 1,
                        "upload_id": upload_id,
                        "part_size": part_size,
                        "bucket": self.ws.bucket,
                        "key": spec.full_key,
                        "size": size,
                        "mtime_ns": mtime_ns,
                        "source": str(spec.source),
                    }
                    atomic_write(state_path, json.dumps(state).encode())
            count = max(1, math.ceil(size / part_size))
            reused = len(done)
            progress.add(sum(_part_len(n, part_size, size) for n in done))

            def reader(n: int) -> Callable[[], bytes]:
                return lambda: _pread(fd, _part_len(n, part_size, size), (n - 1) * part_size)

            jobs = ((n, reader(n)) for n in range(1, count + 1) if n not in done)
            try:
                self.run_parts(spec, upload_id, jobs, done, progress)
                result = self.complete(spec, upload_id, done, size)
            except (KeyboardInterrupt, SystemExit):
                raise  # keep the upload and the state file: run again to resume
            except BaseException as exc:
                self.abort(spec.full_key, upload_id)
                with contextlib.suppress(OSError):
                    state_path.unlink()
                raise _as_transfer_error(exc, spec.key) from exc
            with contextlib.suppress(OSError):
                state_path.unlink()
            if reused:
                result = UploadResult(**{**result.__dict__, "resumed_parts": reused})
            return result
        finally:
            os.close(fd)

    def resume(
        self, spec: _UploadSpec, fd: int, size: int, state_path: Path
    ) -> tuple[str, int, dict[int, tuple[str, bytes]]] | None:
        """The in-progress upload to continue, its part size and the parts to keep."""
        from sts_bridge._files import read_private_json

        try:
            state = read_private_json(state_path)
        except (OSError, ValueError):
            state = None
        if not isinstance(state, dict):
            return None
        upload_id = state.get("upload_id")
        part_size = state.get("part_size")
        if (
            not isinstance(upload_id, str)
            or not isinstance(part_size, int)
            or state.get("key") != spec.full_key
            or state.get("size") != size
            or part_size < MIN_PART_SIZE
        ):
            return None
        try:
            if not self._upload_in_progress(spec.full_key, upload_id):
                log.info("the interrupted upload of %s is gone; starting again", spec.key)
                with contextlib.suppress(OSError):
                    state_path.unlink()
                return None
            stored = self._list_parts(spec.full_key, upload_id)
        except Exception as exc:
            log.warning("cannot resume the upload of %s (%s); starting again", spec.key, exc)
            return None
        keep: dict[int, tuple[str, bytes]] = {}
        count = max(1, math.ceil(size / part_size))
        for number, (etag, part_bytes) in stored.items():
            if not 1 <= number <= count or part_bytes != _part_len(number, part_size, size):
                continue
            data = _pread(fd, part_bytes, (number - 1) * part_size)
            if hashlib.md5(data, usedforsecurity=False).hexdigest() == etag:
                keep[number] = (etag, hashlib.sha256(data).digest())
            else:
                log.info(
                    "part %d of %s differs from the file; uploading it again", number, spec.key
                )
        return upload_id, part_size, keep

    def _upload_in_progress(self, full_key: str, upload_id: str) -> bool:
        query = {"uploads": "", "prefix": full_key}
        while True:
            resp = self.call("GET", "", "ListMultipartUploads", query=query)
            data = resp.data
            for up in _xml_blocks(data, "Upload"):
                if _xml_text(up, "Key") == full_key and _xml_text(up, "UploadId") == upload_id:
                    return True
            if _xml_text(data, "IsTruncated") != "true":
                return False
            query = {
                **query,
                "key-marker": _xml_text(data, "NextKeyMarker"),
                "upload-id-marker": _xml_text(data, "NextUploadIdMarker"),
            }

    def _list_parts(self, full_key: str, upload_id: str) -> dict[int, tuple[str, int]]:
        parts: dict[int, tuple[str, int]] = {}
        query = {"uploadId": upload_id}
        while True:
            resp = self.call("GET", full_key, "ListParts", query=query)
            data = resp.data
            for p in _xml_blocks(data, "Part"):
                parts[int(_xml_text(p, "PartNumber"))] = (
                    _strip_etag(_xml_text(p, "ETag")),
                    int(_xml_text(p, "Size") or -1),
                )
            marker = _xml_text(data, "NextPartNumberMarker")
            if _xml_text(data, "IsTruncated") != "true" or not marker:
                return parts
            query = {"uploadId": upload_id, "part-number-marker": marker}

    # ---------------------------------------------------------- download
    def download(
        self, full_key: str, key: str, target: Path, progress: ProgressCallback | None
    ) -> None:
        """GET ``full_key`` into ``target``: parallel ranged GETs into a temp file, then rename.

        The first ranged GET also tells the size and ETag (no HEAD). Each
        worker streams its range with ``readinto`` into one reused buffer
        writes it with ``os.pwrite`` at its offset: memory stays at ``concurrency``
        x ``_READ_BUFFER`` whatever the size. Later ranges carry
        ``If-Match: <etag>`` so an object replaced meanwhile fails the
        download instead of mixing two versions. Checked: every range
        delivers exactly its bytes, the total is the object's size, and the
        MD5 of the file equals a single-part ETag (see :func:`_etag_md5`).
        """
        what = f"downloading {key!r}"
        first_end = self.part_size - 1
        try:
            resp = self.call(
                "GET",
                full_key,
                what,
                headers={"Range": f"bytes=0-{first_end}"},
                ok=frozenset({200, 206, 416}),
                stream=True,
            )
            if resp.status == 416:  # an empty object has no byte 0
                resp.release_conn()
                resp = self.call("GET", full_key, what, stream=True)
        except NotFoundError as exc:
            raise NotFoundError(
                f"no object {key!r} in workspace {getattr(self.ws, 'name', '')!r}".replace(
                    " ''", ""
                ),
                status=404,
                hint="list the workspace with `sts-bridge ls`",
            ) from exc
        size = _total_size(resp)
        etag = _strip_etag(resp.headers.get("ETag"))
        md5_hex, reason = _etag_md5(etag, resp.headers)
        tracker = _Progress(progress, size)
        tmp = target.with_name(f".{target.name}.{os.getpid()}-{random.getrandbits(32):08x}.part")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        direct: builtins.list[int | None] = [None]  # the O_DIRECT descriptor, None once given up
        opened: int | None = None
        ok = False
        try:
            if size:
                os.ftruncate(fd, size)
            step = self.part_size
            direct[0] = opened = _open_direct(tmp, size, step)
            first_len = size if resp.status == 200 else min(step, size)
            md5 = hashlib.md5(usedforsecurity=False) if md5_hex and first_len == size else None
            ranges = [(start, min(start + step, size)) for start in range(first_len, size, step)]
            fetch = functools.partial(
                self._fetch_range, fd, full_key, what, etag, size, tracker, direct=direct
            )
            if not ranges:
                fetch(0, first_len, resp, md5)
            else:
                workers = min(self.concurrency, len(ranges) + 1)
                with cf.ThreadPoolExecutor(workers, thread_name_prefix="sts-bridge-get") as pool:
                    futures = [pool.submit(fetch, 0, first_len, resp, None)]
                    futures += [pool.submit(fetch, a, b, None, None) for a, b in ranges]
                    try:
                        for fut in cf.as_completed(futures):
                            fut.result()
                    except BaseException:
                        for fut in futures:
                            fut.cancel()
                        raise
            if os.fstat(fd).st_size != size:
                raise TransferError(f"{what}: the file is not {size} bytes long")
            if md5_hex:
                got = md5.hexdigest() if md5 is not None else _file_md5(fd, size)
                if got != md5_hex:
                    raise TransferError(
                        f"{what}: the data does not match the object's ETag (MD5)",
                        hint="try again; the object may have changed or been corrupted",
                    )
            else:
                log.debug("%s: ETag not compared (%s); size checked", what, reason)
            ok = True
        finally:
            direct[0] = None
            if opened is not None:
                os.close(opened)
            os.close(fd)
            if ok:
                os.replace(tmp, target)
            else:
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def _fetch_range(
        self,
        fd: int,
        full_key: str,
        what: str,
        etag: str,
        size: int,
        tracker: _Progress,
        start: int,
        end: int,
        resp: Any,
        md5: Any,
        *,
        direct: builtins.list[int | None] | None = None,
    ) -> None:
        """Stream bytes ``start``..``end`` (exclusive) of the object into ``fd``.

        A connection that breaks mid-range is retried from the first byte
        not yet written (fresh credentials, ``If-Match`` the ETag).

        With an O_DIRECT descriptor in ``direct[0]`` the buffer is filled
        completely before each write, so every write starts on an aligned
        offset (ranges start on multiples of the range size) and, but for
        the object's last bytes (written through ``fd``), has an aligned
        length. A direct write the file system refuses falls back to ``fd``
        for the rest of the download.
        """
        import http.client

        import urllib3

        if direct is None:
            direct = [None]
        buf = _buffer()
        pos = start
        fill = 0  # bytes in buf, for the file from pos on, not written yet
        failures = 0
        while pos < end:
            if resp is None:
                headers = {"Range": f"bytes={pos}-{end - 1}"}
                if etag:
                    headers["If-Match"] = f'"{etag}"'
                resp = self.call(
                    "GET", full_key, what, headers=headers, ok=frozenset({206}), stream=True
                )
                if _total_size(resp) != size or _range_start(resp) != pos:
                    resp.release_conn()
                    raise TransferError(f"{what}: the object changed during the download")
            fp = getattr(resp, "_fp", None)
            readinto = fp.readinto if fp is not None else resp.readinto
            try:
                while pos < end:
                    want = min(len(buf), end - pos)
                    n = readinto(buf[fill:want])
                    if not n:
                        raise http.client.IncompleteRead(b"", end - pos - fill)
                    fill += n
                    dfd = direct[0]
                    if dfd is not None and fill < want:
                        continue  # an O_DIRECT write wants the whole buffer
                    view = buf[:fill]
                    if md5 is not None:
                        md5.update(view)
                    if dfd is not None and not fill % _DIRECT_ALIGN:
                        self._write_direct(dfd, fd, view, pos, what, direct)
                    else:
                        _pwrite_all(fd, view, pos, what)
                    pos += fill
                    tracker.add(fill)
                    fill = 0
            except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError) as exc:
                fill = 0  # read but not written: asked for again from pos
                resp.close()
                resp.release_conn()
                resp = None
                failures += 1
                if failures >= _ATTEMPTS:
                    raise TransferError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
                log.debug("%s: range broke at byte %d (%s); resuming", what, pos, exc)
                continue
        if resp is not None:
            resp.release_conn()

    @staticmethod
    def _write_direct(
        dfd: int,
        fd: int,
        view: memoryview,
        pos: int,
        what: str,
        direct: builtins.list[int | None],
    ) -> None:
        try:
            written = os.pwrite(dfd, view, pos)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise TransferError(f"{what}: writing the file failed: {exc}") from exc
            log.debug("%s: O_DIRECT write refused (%s); buffered writes", what, exc)
            direct[0] = None  # the download closes dfd at the end
            written = 0
        if written < len(view):
            _pwrite_all(fd, view[written:], pos + written, what)


class _FakeClientError(Exception):
    """A raw HTTP error shaped like botocore's ClientError for :func:`_map_error`."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


def _part_len(number: int, part_size: int, size: int) -> int:
    return max(0, min(part_size, size - (number - 1) * part_size))


def _as_transfer_error(exc: BaseException, key: str) -> StsBridgeError:
    if isinstance(exc, StsBridgeError):
        return exc
    if isinstance(exc, OSError):
        return TransferError(f"uploading {key!r} failed: {exc}")
    return TransferError(f"uploading {key!r} failed: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------- mixin
class WorkspaceTransfers:
    """Data operations of a ``Workspace`` (see ``docs/architecture.md``).

    Every relative key is checked by :func:`sts_bridge.keys.workspace_key`
    before any request: an unsafe key raises :class:`InvalidKeyError`.
    """

    if TYPE_CHECKING:

        @property
        def name(self) -> str: ...
        @property
        def bucket(self) -> str: ...
        @property
        def prefix(self) -> str: ...
        @property
        def endpoint_url(self) -> str: ...
        @property
        def region(self) -> str: ...
        @property
        def addressing_style(self) -> str: ...
        @property
        def verify(self) -> bool | str: ...
        def credentials(self) -> Any: ...
        def credentials_for(self, min_lifetime: float) -> Any: ...
        def s3_client(self) -> S3Client: ...

    # ---------------------------------------------------------------- upload
    def upload(
        self,
        source: Source,
        key: str | None = None,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        part_size: int = DEFAULT_PART_SIZE,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        resumable: bool = True,
    ) -> UploadResult | builtins.list[UploadResult]:
        """Upload a file, a directory (recursively) or a binary stream.

        - file: ``key`` defaults to the file name; a ``key`` ending in ``/``
          is a folder the file goes into.
        - directory: one object per file whose relative path passes
          ``include``/``exclude`` (see :func:`matches_filters`), under
          ``key`` (default: the directory's name; ``""`` = workspace root).
          Returns a list.
        - stream (``.read()``) or bytes: ``key`` is required; the length may
          be unknown (multipart once it exceeds one part).

        Large files go multipart (``part_size`` parts, ``concurrency`` at a
        time) and resume after an interruption (see the module docstring).
        ``progress(done, total)`` reports bytes. Raises
        :class:`InvalidKeyError` (before any request), :class:`TransferError`
        (nothing left behind), :class:`PermissionDeniedError`.
        """
        meta = dict(metadata or {})
        for name, value in meta.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name) or not value.isascii():
                raise TransferError(f"metadata {name!r} is not a valid header name/ASCII value")
        specs, single = self._plan_upload(source, key, content_type, meta, include, exclude)
        engine = _Engine(
            self,
            concurrency=concurrency,
            part_size=part_size,
            multipart_threshold=multipart_threshold,
            resumable=resumable,
            small_concurrency=max(concurrency, DEFAULT_SMALL_FILE_CONCURRENCY),
        )
        sizes = [s.size for s in specs]
        total = None if builtins.any(s is None for s in sizes) else sum(s or 0 for s in sizes)
        tracker = _Progress(progress, total)
        try:
            if single:
                spec = specs[0]
                if spec.stream is not None:
                    return engine.upload_stream(spec, tracker)
                return engine.upload_file(spec, tracker)
            return self._upload_many(engine, specs, tracker)
        finally:
            engine.close()

    def _plan_upload(
        self,
        source: Source,
        key: str | None,
        content_type: str | None,
        metadata: Mapping[str, str],
        include: Sequence[str] | None,
        exclude: Sequence[str] | None,
    ) -> tuple[builtins.list[_UploadSpec], bool]:
        """Every object to write, keys checked, before any request."""
        import io

        def spec(
            path: Path | None, stream: IO[bytes] | None, rel: str, size: int | None
        ) -> _UploadSpec:
            full = workspace_key(self.prefix, rel)
            return _UploadSpec(
                source=path,
                stream=stream,
                key=rel,
                full_key=full,
                size=size,
                content_type=content_type or guess_content_type(rel),
                metadata=metadata,
            )

        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(bytes(source))
        if hasattr(source, "read"):
            if not key:
                raise InvalidKeyError("uploading a stream needs a key")
            return [spec(None, source, key, None)], True  # type: ignore[arg-type]
        path = Path(os.fspath(source))  # type: ignore[arg-type]
        if path.is_dir():
            if key is None:
                base = path.resolve().name + "/"
            elif key in ("", "/"):
                base = ""
            else:
                base = key.rstrip("/") + "/"
            found: builtins.list[_UploadSpec] = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for fname in sorted(files):
                    full_path = Path(root, fname)
                    rel = full_path.relative_to(path).as_posix()
                    if not matches_filters(rel, include, exclude):
                        continue
                    try:  # one stat per file (is_file() + stat() made two)
                        st = os.stat(full_path)
                    except OSError as exc:  # a broken symlink...: not a file, as is_file() said
                        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
                            continue
                        raise
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    found.append(spec(full_path, None, base + rel, st.st_size))
            return found, False
        if not path.is_file():
            raise TransferError(f"{path} is not a file or directory", hint="check the path")
        if key is None:
            key = path.name
        elif key.endswith("/"):
            key = key + path.name
        return [spec(path, None, key, path.stat().st_size)], True

    def _upload_many(
        self, engine: _Engine, specs: Sequence[_UploadSpec], tracker: _Progress
    ) -> builtins.list[UploadResult]:
        # Small files go several at a time (latency-bound); large files one
        # after the other, each with its own concurrent parts.
        small = [s for s in specs if (s.size or 0) < engine.threshold]
        large = [s for s in specs if (s.size or 0) >= engine.threshold]
        results: dict[str, UploadResult] = {}
        if small:
            with cf.ThreadPoolExecutor(
                min(engine.small_concurrency, len(small)), thread_name_prefix="sts-bridge-put"
            ) as pool:
                for res in pool.map(lambda s: engine.upload_file(s, tracker), small):
                    results[res.key] = res
        for s in large:
            results[s.key] = engine.upload_file(s, tracker)
        return [results[s.key] for s in specs]

    # -------------------------------------------------------------- download
    def download(
        self,
        key: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        progress: ProgressCallback | None = None,
        concurrency: int = DEFAULT_DOWNLOAD_CONCURRENCY,
        part_size: int = DEFAULT_DOWNLOAD_RANGE,
    ) -> Path:
        """Download ``key`` to ``dest`` (a file, or a directory to put it in).

        Ranged GETs of ``part_size`` bytes, ``concurrency`` at a time, each
        signed with fresh credentials. The file appears complete or not at
        all (temp file + rename). Checked: the size, and the MD5 when the
        ETag is one (single-part objects). Raises :class:`NotFoundError`
        when there is no such object.
        """
        full = workspace_key(self.prefix, key)
        name = key.rsplit("/", 1)[-1]
        if dest is None:
            target = Path(name)
        else:
            target = Path(os.fspath(dest))
            if target.is_dir() or os.fspath(dest).endswith(("/", os.sep)):
                target = target / name
        target.parent.mkdir(parents=True, exist_ok=True)
        engine = _Engine(
            self,
            concurrency=concurrency,
            part_size=part_size,
            multipart_threshold=DEFAULT_MULTIPART_THRESHOLD,
            resumable=False,
        )
        try:
            engine.download(full, key, target, progress)
        finally:
            engine.close()
        return target

    # ------------------------------------------------------------------ list
    def list(
        self, prefix: str = "", *, recursive: bool = True, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        """Objects under relative ``prefix`` (S3 prefix semantics), page by page.

        With ``recursive=False`` only one level is listed and sub-folders
        come as ``ObjectInfo(is_prefix=True)``.
        """
        full_prefix = workspace_prefix(self.prefix, prefix)
        s3 = self.s3_client()
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": full_prefix,
            "MaxKeys": page_size,
        }
        if not recursive:
            kwargs["Delimiter"] = "/"
        while True:
            try:
                resp = s3.list_objects_v2(**kwargs)
            except Exception as exc:
                raise _map_error(exc, f"listing {prefix or 'the workspace'!r}") from exc
            for cp in resp.get("CommonPrefixes", []):
                yield ObjectInfo(
                    key=relative_key(self.prefix, cp["Prefix"]), size=0, is_prefix=True
                )
            for obj in resp.get("Contents", []):
                yield ObjectInfo(
                    key=relative_key(self.prefix, obj["Key"]),
                    size=int(obj.get("Size", 0)),
                    etag=_strip_etag(obj.get("ETag")) or None,
                    last_modified=obj.get("LastModified"),
                )
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    # ---------------------------------------------------------------- delete
    def delete(self, key_or_prefix: str, *, recursive: bool = False) -> int:
        """Delete one object, or with ``recursive=True`` everything under a folder.

        ``recursive`` treats ``key_or_prefix`` as a folder (``results`` means
        ``results/``; ``""`` means the whole workspace) and also aborts
        unfinished multipart uploads there. Returns how many objects were
        deleted. Raises :class:`NotFoundError` for a missing single key.
        """
        s3 = None
        if not recursive:
            full = workspace_key(self.prefix, key_or_prefix)
            s3 = self.s3_client()
            try:
                s3.head_object(Bucket=self.bucket, Key=full)
            except Exception as exc:
                err = _map_error(exc, f"deleting {key_or_prefix!r}")
                if not isinstance(err, NotFoundError):
                    raise err from exc
                if builtins.any(True for _ in self.list(key_or_prefix + "/", page_size=1)):
                    raise NotFoundError(
                        f"{key_or_prefix!r} is a folder, not an object",
                        status=404,
                        hint="delete it with recursive=True (CLI: --recursive)",
                    ) from exc
                raise NotFoundError(f"no object {key_or_prefix!r}", status=404) from exc
            try:
                s3.delete_object(Bucket=self.bucket, Key=full)
            except Exception as exc:
                raise _map_error(exc, f"deleting {key_or_prefix!r}") from exc
            return 1
        sub = key_or_prefix if key_or_prefix in ("", "/") else key_or_prefix.rstrip("/") + "/"
        if sub == "/":
            sub = ""
        full_prefix = workspace_prefix(self.prefix, sub)
        s3 = self.s3_client()
        deleted = 0
        bulk = [True]
        batch: builtins.list[str] = []
        for info in self.list(sub):
            batch.append(self.prefix + info.key)
            if len(batch) == 1000:
                deleted += self._delete_batch(s3, batch, bulk)
                batch = []
        if batch:
            deleted += self._delete_batch(s3, batch, bulk)
        self._abort_uploads_under(s3, full_prefix)
        return deleted

    def _delete_batch(
        self, s3: S3Client, keys: builtins.list[str], bulk: builtins.list[bool]
    ) -> int:
        """DeleteObjects, or one DeleteObject per key once the bulk call was refused.

        ``bulk`` is a one-element flag shared by the batches of one delete:
        after a refusal the bulk call is not tried again.
        """
        if bulk[0]:
            try:
                resp = s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
                )
            except Exception as exc:
                # botocore >= 1.36 sends a CRC32 instead of Content-MD5, which some
                # S3-compatible servers refuse, and radosgw 16 answers 403 to
                # DeleteObjects under a prefix-scoped session policy that allows
                # DeleteObject: fall back to one DELETE per object, whose own
                # errors are then the real answer.
                code, status = _error_code(exc)
                log.info("DeleteObjects refused (%s, HTTP %s); deleting one by one", code, status)
                bulk[0] = False
            else:
                errors = resp.get("Errors", [])
                if errors:
                    first = errors[0]
                    raise TransferError(
                        f"{len(errors)} of {len(keys)} objects were not deleted, e.g. "
                        f"{first.get('Key')!r}: {first.get('Code')}"
                    )
                return len(keys)
        return self._delete_each(s3, keys)

    def _delete_each(self, s3: S3Client, keys: builtins.list[str]) -> int:
        def one(k: str) -> None:
            try:
                s3.delete_object(Bucket=self.bucket, Key=k)
            except Exception as exc:
                raise _map_error(exc, f"deleting {k!r}") from exc

        with cf.ThreadPoolExecutor(DEFAULT_CONCURRENCY) as pool:
            builtins.list(pool.map(one, keys))
        return len(keys)

    def _abort_uploads_under(self, s3: S3Client, full_prefix: str) -> None:
        try:
            resp = s3.list_multipart_uploads(Bucket=self.bucket, Prefix=full_prefix)
            for up in resp.get("Uploads", []):
                s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"]
                )
        except Exception as exc:  # best effort: the objects are what was asked
            log.info("could not clean unfinished uploads under %s: %s", full_prefix, exc)

    # --------------------------------------------------------------- presign
    def presign(
        self, key: str, method: str = "GET", expires_in: int | timedelta = 3600
    ) -> PresignedUrl:
        """A presigned URL for ``key`` (GET, PUT, HEAD or DELETE).

        The URL cannot outlive the credentials that sign it: temporary
        credentials are refreshed first when that buys a longer life, and
        ``expires_in`` is clamped to what is left (with a
        :class:`PresignClampedWarning`); ``expires_at`` is the real expiry.
        At most 7 days.
        """
        return self._presign([key], method, expires_in, stacklevel=3)[0]

    def presign_many(
        self, keys: Iterable[str], method: str = "GET", expires_in: int | timedelta = 3600
    ) -> builtins.list[PresignedUrl]:
        """Presigned URLs for many keys at once (fast: one signing key, one instant)."""
        return self._presign(keys, method, expires_in, stacklevel=3)

    def _presign(
        self,
        keys: Iterable[str],
        method: str,
        expires_in: int | timedelta,
        *,
        stacklevel: int,
    ) -> builtins.list[PresignedUrl]:
        method = method.upper()
        if method not in ("GET", "PUT", "HEAD", "DELETE"):
            raise ValueError(f"method must be GET, PUT, HEAD or DELETE, not {method!r}")
        seconds = (
            int(expires_in.total_seconds())
            if isinstance(expires_in, timedelta)
            else int(expires_in)
        )
        if not 1 <= seconds <= MAX_EXPIRES:
            raise ValueError(f"expires_in must be between 1 second and 7 days, not {seconds}s")
        key_list = builtins.list(keys)
        prefix = self.prefix
        full_keys = [workspace_key(prefix, k) for k in key_list]
        creds = self.credentials_for(min_lifetime=seconds)
        precise_now = datetime.now(timezone.utc)
        # SigV4 dates have whole seconds; the URL lives from X-Amz-Date for
        # X-Amz-Expires seconds, so measure the clamp from the truncated time,
        # but refuse from the precise one (0.2 s left is no URL worth giving).
        now = precise_now.replace(microsecond=0)
        effective = seconds
        expiry: datetime | None = getattr(creds, "expiry", None)
        if expiry is not None:
            remaining = math.floor((expiry - now).total_seconds())
            if (expiry - precise_now).total_seconds() < 1:
                raise CredentialsError(
                    "the storage credentials expire now; cannot sign a URL",
                    hint="try again in a moment",
                )
            if remaining < seconds:
                effective = remaining
                warnings.warn(
                    f"presigned URL valid for {effective}s, not {seconds}s: the workspace "
                    f"credentials that sign it expire at {expiry.isoformat()}",
                    PresignClampedWarning,
                    stacklevel=stacklevel,
                )
        signer = Signer(
            endpoint_url=self.endpoint_url,
            bucket=self.bucket,
            region=self.region,
            credentials=creds,
            addressing_style=self.addressing_style,
        )
        urls = signer.presign_many(full_keys, method, effective, now=now)
        expires_at = now + timedelta(seconds=effective)
        return [
            PresignedUrl(url=u, method=method, key=k, expires_at=expires_at)
            for u, k in zip(urls, key_list, strict=True)
        ]


def upload_to_workspace(
    source: Source,
    key: str | None = None,
    *,
    workspace: Any = None,
    client: Any = None,
    **kwargs: Any,
) -> UploadResult | builtins.list[UploadResult]:
    """One call: resolve the workspace (from the environment) and upload.

    ``workspace`` is a ``Workspace`` object, a workspace name, or ``None``
    (TERRAPI_WORKSPACE or your default workspace); ``client`` a
    ``sts_bridge.Client`` (default ``Client.from_env()``). Other keyword
    arguments go to :meth:`WorkspaceTransfers.upload`.
    """
    if isinstance(workspace, WorkspaceTransfers):
        ws = workspace
    else:
        if client is None:
            from sts_bridge.client import Client  # type: ignore[import-not-found,unused-ignore]

            client = Client.from_env()
        ws = client.workspace(workspace)
    return ws.upload(source, key, **kwargs)
