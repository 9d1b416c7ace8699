"""The upload engine: planning helpers, single PUTs, multipart uploads, resume.

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

Every object uploaded from bytes or a file also records a SHA-256 of its
content in its user metadata, which ``sts-bridge sync`` compares with local
files. A single PUT records the SHA-256 of its body, ``x-amz-meta-sha256``
(:data:`SHA256_METADATA`), hashed once for the signature and the metadata.
A multipart upload from a file records S3's composite SHA-256 (the SHA-256
of the concatenated part digests, ``<hex>-<parts>``) in
``x-amz-meta-sha256-composite`` (:data:`COMPOSITE_METADATA`) and the part
size it was computed with in ``x-amz-meta-sha256-part-size``
(:data:`PART_SIZE_METADATA`): a whole-file SHA-256 would hash every byte a
second time, the composite comes from the part digests the upload needs to
sign its parts anyway. A multipart upload must name its metadata when it
starts, before any part is sent, so the file is read once first
(:func:`~sts_bridge.s3.digests.file_digests`, started ahead by the CLI):
that pass computes the SHA-256 of every part, and each part is sent signed
with the digest of that pass, read from the file while it is sent
(:class:`~sts_bridge.s3.transport.FileRange`: ``sendfile(2)`` over plain
HTTP, no part-sized buffer). The server recomputes every part's SHA-256,
so a file that changes between the two reads fails the upload (aborted)
instead of storing an object whose recorded digest is not its content; a
file that ends before its part does fails it the same way.
Multipart uploads from a stream of unknown length carry no digest metadata.

Resume
------
A multipart upload from a file writes a small 0600 state file
(``<cache dir>/uploads/<hash of endpoint, bucket, key, size, mtime>.json``)
holding the upload id and part size. Run again after the process died, the
upload is found again (state file; ListParts answers NoSuchUpload once it
was completed or aborted) and ListParts gives the stored parts, and each is kept only
when its ETag equals the MD5 of the local bytes of that part; the others are
uploaded again. A failure (an exception) aborts the multipart upload and
removes the state file, so no parts are left behind; only a killed process
(or Ctrl-C) leaves an upload to resume.

Records
-------
The state file is also the upload's record (:mod:`sts_bridge.s3.upload_records`);
an upload that cannot resume (a stream, ``resumable=False``) gets a record
of its own. Either is written before the first part and removed once the
upload is completed or aborted, so ``sts-bridge uploads`` finds what a
killed process left (:meth:`UploadEngine.unfinished`).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fnmatch
import functools
import hashlib
import json
import logging
import math
import mimetypes
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sts_bridge.errors import (
    InvalidArgumentError,
    ObjectNotFoundError,
    StsBridgeError,
    TransferError,
)
from sts_bridge.s3.config import TransferConfig
from sts_bridge.s3.digests import (
    DEFAULT_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    choose_part_size,
    composite_sha256,
    file_digests,
    file_identity,
    part_length,
    pread_exact,
    taken_digests,
)
from sts_bridge.s3.errors import map_s3_error
from sts_bridge.s3.signed_http import (
    BucketTarget,
    S3Http,
    strip_etag,
    xml_blocks,
    xml_text,
)
from sts_bridge.s3.transfer_types import Progress, UnfinishedUpload, UploadResult
from sts_bridge.s3.transport import (
    BodyPieces,
    ConnectionPools,
    FileRange,
    SourceShrank,
    sha256_of,
)

# The whole engine logs under the name of its public module.
log = logging.getLogger("sts_bridge.s3.transfers")

#: User-metadata name of the whole-object SHA-256 (hex): ``x-amz-meta-sha256``
#: (single PUTs; multipart uploads of older sts-bridge versions).
SHA256_METADATA = "sha256"
#: User-metadata name of a multipart upload's composite SHA-256 (``<hex>-<parts>``).
COMPOSITE_METADATA = "sha256-composite"
#: User-metadata name of the part size (bytes) the composite SHA-256 was computed with.
PART_SIZE_METADATA = "sha256-part-size"


def composite_checksum(part_digests: Sequence[bytes]) -> str:
    """``sha256:<hex>-<n>``: SHA-256 of the concatenated part SHA-256 digests."""
    return f"sha256:{composite_sha256(list(part_digests))}"


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


def check_pattern(pattern: str) -> str:
    """Return ``pattern`` when it is a usable include/exclude glob; else raise ``ValueError``.

    fnmatch reads an unclosed ``[`` as a literal character, so ``--include '['``
    would quietly match nothing; an empty pattern matches nothing either.
    """
    if not pattern:
        raise ValueError("an empty include/exclude pattern matches nothing")
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                raise ValueError(
                    f"pattern {pattern!r} has a '[' without its ']' (write '[[]' for a literal '[')"
                )
            i = j
        i += 1
    return pattern


def check_patterns(include: Sequence[str] | None, exclude: Sequence[str] | None) -> None:
    """Check every include/exclude glob (:func:`check_pattern`) before anything is listed
    or sent; raise :class:`InvalidArgumentError` (a ``ValueError``) for the first bad one.

    ``upload`` and ``sync`` share it, so a pattern refused by one is refused by the other.
    """
    for option, patterns in (("include", include), ("exclude", exclude)):
        if patterns is None:
            continue
        if isinstance(patterns, str):
            raise InvalidArgumentError(
                f"{option} must be a list of patterns, not the string {patterns!r}",
                hint=f"write {option}=[{patterns!r}]",
            )
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise InvalidArgumentError(
                    f"{option} pattern {pattern!r} is a {type(pattern).__name__}, not a string"
                )
            try:
                check_pattern(pattern)
            except ValueError as exc:
                raise InvalidArgumentError(
                    f"invalid {option} pattern: {exc}",
                    hint="a glob such as '*.tif' or 'data/2024-*'; quote it in the shell",
                ) from None


def skip_reason(
    path: str | os.PathLike[str], st: os.stat_result | None = None, error: OSError | None = None
) -> str | None:
    """Why the entry at ``path`` is not uploaded as a file, or ``None`` for a regular file
    (a symlink to one included). ``st`` / ``error``: what ``os.stat(path)`` already gave.

    A tree walk says these aloud instead of leaving them out silently: a
    dangling link, a link loop, a FIFO (reading it could block forever), a
    socket, a device, a link to a folder (never followed: it may loop).
    """
    import errno
    import stat

    if st is None and error is None:
        try:
            st = os.stat(path)
        except OSError as exc:
            error = exc
    if st is None:
        code = error.errno if error is not None else None
        if code == errno.ELOOP:
            return "a symbolic link loop"
        if code in (errno.ENOENT, errno.ENOTDIR):
            return "a dangling symbolic link" if os.path.islink(path) else "gone meanwhile"
        return f"cannot be read ({error.strerror if error is not None else 'unknown'})"
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        return "a link to a folder (links to folders are not followed)"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket"
    return "a device or other special file"


def _changed(source: Path) -> TransferError:
    return TransferError(
        f"{source} changed while it was being uploaded; nothing was stored",
        hint="upload it again once it is no longer being written",
    )


def guess_content_type(key: str) -> str:
    return mimetypes.guess_type(key, strict=False)[0] or "application/octet-stream"


def _read_exact(stream: IO[bytes], size: int) -> bytes | BodyPieces:
    """``size`` bytes of ``stream`` (fewer only at its end). A stream that can hand
    over its bytes in pieces (``read_pieces``, the async API's request bodies)
    gives them unjoined: no copy (see :class:`BodyPieces`)."""
    read_pieces = getattr(stream, "read_pieces", None)
    if read_pieces is not None:
        pieces: BodyPieces = read_pieces(size)
        return pieces
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _body(chunk: bytes | BodyPieces) -> bytes | BodyPieces:
    """A part's body: pieces as they are, anything else as its own ``bytes``."""
    return chunk if isinstance(chunk, BodyPieces) else bytes(chunk)


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


@dataclass(frozen=True)
class UploadSpec:
    source: Path | None
    stream: IO[bytes] | None
    key: str  # relative
    full_key: str
    size: int | None
    content_type: str
    metadata: Mapping[str, str]


class UploadEngine(S3Http):
    """Uploads over :class:`~sts_bridge.s3.signed_http.S3Http`: PUT, multipart, resume.

    Of ``config`` it uses the upload knobs: ``part_size``,
    ``multipart_threshold``, ``part_concurrency`` (parts of one file in
    flight) and ``file_concurrency`` (small files at once). ``resumable``:
    a multipart upload keeps its resume state under ``state_dir`` (default:
    the default cache directory's ``uploads/``) and resumes from it.
    """

    def __init__(
        self,
        ws: BucketTarget,
        config: TransferConfig,
        *,
        resumable: bool = True,
        state_dir: Path | None = None,
        pools: ConnectionPools | None = None,
    ) -> None:
        super().__init__(
            ws,
            config,
            connections=max(config.part_concurrency, config.file_concurrency),
            pools=pools,
        )
        self.concurrency = config.part_concurrency
        self.small_concurrency = config.file_concurrency
        self.part_size = config.part_size
        self.threshold = config.multipart_threshold
        self.resumable = resumable
        self.state_dir = state_dir

    # ---------------------------------------------------------- single PUT
    def put_object(
        self, spec: UploadSpec, body: bytes | BodyPieces, progress: Progress
    ) -> UploadResult:
        sha = sha256_of(body).hexdigest()
        headers = {"Content-Type": spec.content_type}
        headers.update({f"x-amz-meta-{k}": v for k, v in spec.metadata.items()})
        headers[f"x-amz-meta-{SHA256_METADATA}"] = sha
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
            sha256=sha,
        )

    def put_part(
        self,
        full_key: str,
        upload_id: str,
        number: int,
        body: bytes | FileRange | BodyPieces,
        digest: bytes | None = None,
    ) -> tuple[int, str, bytes]:
        """UploadPart ``body``, signed with its SHA-256 ``digest`` (computed here when ``None``;
        a :class:`~sts_bridge.s3.transport.FileRange` body needs it given).

        The server recomputes the SHA-256 and refuses a body that does not
        match the signed one (``XAmzContentSHA256Mismatch``).
        """
        if digest is None:
            if isinstance(body, FileRange):
                raise ValueError("a part read from a file is signed with its digest from the pass")
            digest = sha256_of(body).digest()
        etag = self.put(
            full_key,
            body,
            digest.hex(),
            query={"partNumber": str(number), "uploadId": upload_id},
        )
        return number, etag, digest

    # ---------------------------------------------------------- multipart
    def create_multipart(
        self, spec: UploadSpec, composite: str | None = None, part_size: int | None = None
    ) -> str:
        """CreateMultipartUpload; ``composite`` (``<hex>-<parts>``, of parts of
        ``part_size`` bytes) is recorded in the object's metadata when given."""
        headers = {"Content-Type": spec.content_type}
        headers.update({f"x-amz-meta-{k}": v for k, v in spec.metadata.items()})
        if composite and part_size:
            headers[f"x-amz-meta-{COMPOSITE_METADATA}"] = composite
            headers[f"x-amz-meta-{PART_SIZE_METADATA}"] = str(part_size)
        resp = self.call(
            "POST",
            spec.full_key,
            f"starting the upload of {spec.key!r}",
            query={"uploads": ""},
            headers=headers,
        )
        upload_id = xml_text(resp.data, "UploadId")
        if not upload_id:
            raise TransferError(f"starting the upload of {spec.key!r}: no UploadId in the answer")
        return upload_id

    def abort(self, full_key: str, upload_id: str) -> bool:
        """Abort a multipart upload; ``False`` (logged) when the store did not confirm it."""
        try:
            self.call(
                "DELETE",
                full_key,
                f"aborting the upload of {self.user_key(full_key)!r}",
                query={"uploadId": upload_id},
                ok=frozenset({200, 204, 404}),  # 404: already gone
            )
        except Exception as exc:  # the original error matters more
            log.warning("could not abort the multipart upload of %s: %s", full_key, exc)
            return False
        return True

    def complete(
        self, spec: UploadSpec, upload_id: str, parts: Mapping[int, tuple[str, bytes]], size: int
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
            code = xml_text(data, "Code")
            status = 500 if code == "InternalError" else 400
            raise map_s3_error(code, status, what, key=spec.key)
        # radosgw answers CompleteMultipartUpload with an empty ETag.
        etag = strip_etag(xml_text(data, "ETag"))
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
        spec: UploadSpec,
        upload_id: str,
        jobs: Iterable[tuple[int, Callable[[], bytes | FileRange | BodyPieces]]],
        done: dict[int, tuple[str, bytes]],
        progress: Progress,
        expected: Sequence[bytes] | None = None,
    ) -> None:
        """Upload parts concurrently; at most ``concurrency`` bodies in memory.

        ``jobs`` yields ``(part number, body function)``: a file's part is a
        :class:`~sts_bridge.s3.transport.FileRange`, read by the transport
        while it is sent; a stream's part is already read.
        ``expected`` holds the SHA-256 digest of every part from a first
        read of the file; each part is signed with it, so the server refuses
        a part whose bytes differ now, and that raises :class:`TransferError`
        (the file changed during the upload), as does a file that ends
        before its part does.
        """
        slots = threading.BoundedSemaphore(self.concurrency)
        failure: list[BaseException] = []

        def work(
            number: int, read: Callable[[], bytes | FileRange | BodyPieces]
        ) -> tuple[int, str, bytes, int]:
            try:
                if failure:
                    raise TransferError("cancelled")
                body = read()
                if expected is None:
                    n, etag, digest = self.put_part(spec.full_key, upload_id, number, body)
                else:
                    try:
                        n, etag, digest = self.put_part(
                            spec.full_key, upload_id, number, body, expected[number - 1]
                        )
                    except StsBridgeError as exc:
                        if not isinstance(exc, SourceShrank) and (
                            "XAmzContentSHA256Mismatch" not in exc.message
                        ):
                            raise
                        raise TransferError(
                            f"{spec.source} changed while it was being uploaded",
                            hint="upload it again once it is written completely",
                        ) from exc
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

    def upload_stream(self, spec: UploadSpec, progress: Progress) -> UploadResult:
        assert spec.stream is not None
        stream = spec.stream
        # a stream's size is not known ahead: the automatic size is the smallest
        part_size = max(self.part_size or DEFAULT_PART_SIZE, MIN_PART_SIZE)
        first = _read_exact(stream, part_size)
        second = _read_exact(stream, part_size) if len(first) == part_size else b""
        if not second:
            _stop_if_interrupted()
            return self.put_object(spec, first, progress)
        upload_id = self.create_multipart(spec)
        try:
            with self.recorded(spec, upload_id) as record:
                return self._upload_stream_parts(spec, upload_id, record, first, second, progress)
        except OSError as exc:  # the record could not be written: no part was sent yet
            self.abort(spec.full_key, upload_id)
            raise _as_transfer_error(exc, spec.key) from exc

    def _upload_stream_parts(
        self,
        spec: UploadSpec,
        upload_id: str,
        record: Path,
        first: bytes | BodyPieces,
        second: bytes | BodyPieces,
        progress: Progress,
    ) -> UploadResult:
        from sts_bridge.s3.upload_records import remove_record

        assert spec.stream is not None
        stream = spec.stream
        part_size = len(first)
        total = [len(first) + len(second)]

        def jobs() -> Iterator[tuple[int, Callable[[], bytes | BodyPieces]]]:
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
                yield number, functools.partial(_body, chunk)
                number += 1

        done: dict[int, tuple[str, bytes]] = {}
        try:
            self.run_parts(spec, upload_id, jobs(), done, progress)
            _stop_if_interrupted()
            result = self.complete(spec, upload_id, done, total[0])
        except BaseException as exc:
            # A stream cannot be read again: its parts are never resumable,
            # so an interruption aborts them too (and stays an interruption).
            # Not aborted (the store is unreachable): the record stays, and
            # `sts-bridge uploads --abort` finishes the job later.
            if self.abort(spec.full_key, upload_id):
                remove_record(record)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise _as_transfer_error(exc, spec.key) from exc
        remove_record(record)
        return result

    # ---------------------------------------------------------- files
    def upload_file(self, spec: UploadSpec, progress: Progress) -> UploadResult:
        assert spec.source is not None and spec.size is not None
        if spec.size < self.threshold:
            before = file_identity(os.stat(spec.source))
            data = _read_small(spec.source, spec.size)
            if len(data) != spec.size or file_identity(os.stat(spec.source)) != before:
                raise _changed(spec.source)
            return self.put_object(spec, data, progress)
        return self.upload_file_multipart(spec, progress)

    def state_path(self, spec: UploadSpec) -> Path:
        """The resume state file of uploading this source to this object.

        Keyed by destination and source path, not by size or mtime: a run
        after the file was touched or rewritten finds the earlier upload and
        adopts it (every kept part is checked against the file's bytes) or
        aborts it, instead of orphaning it. The file lives in ``state_dir``
        (the workspace's configured cache), else in the default cache.
        """
        assert spec.source is not None
        ident = "\n".join(
            [self.ws.endpoint_url, self.ws.bucket, spec.full_key, os.path.abspath(spec.source)]
        )
        name = hashlib.sha256(ident.encode()).hexdigest()[:40]
        return self.records_dir() / f"{name}.json"

    def records_dir(self) -> Path:
        """Where the records of multipart uploads live (:mod:`sts_bridge.s3.upload_records`)."""
        from sts_bridge.s3.upload_records import records_dir

        return self.state_dir or records_dir(None)

    @contextlib.contextmanager
    def recorded(self, spec: UploadSpec, upload_id: str) -> Iterator[Path]:
        """Record the multipart upload ``upload_id`` of an upload that cannot
        resume (a stream, or ``resumable=False``) while it runs, its lock held
        (:func:`~sts_bridge.s3.upload_records.recorded_upload`)."""
        from sts_bridge.s3.upload_records import recorded_upload

        with recorded_upload(
            self.records_dir(),
            self.ws.endpoint_url,
            self.ws.bucket,
            spec.full_key,
            upload_id,
            None if spec.source is None else str(spec.source),
        ) as path:
            yield path

    def upload_file_multipart(self, spec: UploadSpec, progress: Progress) -> UploadResult:
        from sts_bridge._files import LockTimeout, file_lock

        assert spec.source is not None and spec.size is not None
        size = spec.size
        mtime_ns = spec.source.stat().st_mtime_ns
        state_path = self.state_path(spec)
        try:
            with file_lock(state_path.with_suffix(".lock"), timeout=0.0):
                return self._upload_file_multipart(spec, progress, size, mtime_ns, state_path)
        except LockTimeout as exc:
            raise TransferError(
                f"another process is uploading {spec.source} to {spec.key!r} right now"
            ) from exc

    def _upload_file_multipart(
        self, spec: UploadSpec, progress: Progress, size: int, mtime_ns: int, state_path: Path
    ) -> UploadResult:
        from sts_bridge._files import atomic_write
        from sts_bridge.s3.upload_records import record_fields, remove_record

        assert spec.source is not None
        fd = os.open(spec.source, os.O_RDONLY)
        stack = contextlib.ExitStack()
        # the upload's record: its resume state, or one of its own when it cannot resume
        record = state_path

        def forget(path: Path) -> None:
            if path == state_path:  # its lock file is the resume lock, held by the caller
                with contextlib.suppress(OSError):
                    path.unlink()
            else:
                remove_record(path)

        try:
            before = file_identity(os.fstat(fd))
            if before[2] != size:
                raise _changed(spec.source)
            resumed = self.resume(spec, fd, size, state_path) if self.resumable else None
            done: dict[int, tuple[str, bytes]] = {}
            part_size = (
                resumed[1] if resumed is not None else choose_part_size(size, self.part_size)
            )
            digests = taken_digests(spec.source, fd, part_size) or file_digests(fd, size, part_size)
            composite = composite_sha256(digests)
            if resumed is not None and resumed[3] is not None and resumed[3] != composite:
                # same size, other content (the upload records another composite
                # SHA-256), or an upload started by an older sts-bridge that
                # records a whole-file SHA-256 this pass does not compute
                log.info("%s changed since the interrupted upload; starting again", spec.key)
                self.abort(spec.full_key, resumed[0])
                resumed = None
            if resumed is not None:
                upload_id, part_size, done, _ = resumed
                log.info("resuming %s: %d parts already stored", spec.key, len(done))
            else:
                upload_id = self.create_multipart(spec, composite, part_size)
                if self.resumable:
                    # the resume state is also the upload's record (upload_records)
                    state = {
                        "version": 3,
                        **record_fields(
                            self.ws.endpoint_url, self.ws.bucket, spec.full_key, upload_id
                        ),
                        "part_size": part_size,
                        "composite_sha256": composite,
                        "size": size,
                        "mtime_ns": mtime_ns,
                        "source": str(spec.source),
                    }
                    try:
                        atomic_write(state_path, json.dumps(state).encode())
                    except OSError:  # no part was sent: nothing may stay unrecorded
                        self.abort(spec.full_key, upload_id)
                        raise
                else:
                    record = stack.enter_context(self.recorded(spec, upload_id))
            count = max(1, math.ceil(size / part_size))
            reused = len(done)
            progress.add(sum(part_length(n, part_size, size) for n in done))

            def reader(n: int) -> Callable[[], FileRange]:
                return lambda: FileRange(fd, (n - 1) * part_size, part_length(n, part_size, size))

            jobs = ((n, reader(n)) for n in range(1, count + 1) if n not in done)
            try:
                self.run_parts(spec, upload_id, jobs, done, progress, digests)
                if file_identity(os.fstat(fd)) != before:
                    raise _changed(spec.source)
                result = self.complete(spec, upload_id, done, size)
            except (KeyboardInterrupt, SystemExit):
                raise  # keep the upload and its record: run again to resume
            except BaseException as exc:
                # When the store cannot be reached to abort, the record
                # stays: the next run of the same upload adopts or aborts
                # it, `sts-bridge uploads --abort` aborts it.
                if self.abort(spec.full_key, upload_id):
                    forget(record)
                raise _as_transfer_error(exc, spec.key) from exc
            forget(record)
            return UploadResult(**{**result.__dict__, "resumed_parts": reused})
        finally:
            stack.close()
            os.close(fd)

    def resume(
        self, spec: UploadSpec, fd: int, size: int, state_path: Path
    ) -> tuple[str, int, dict[int, tuple[str, bytes]], str | None] | None:
        """The in-progress upload to continue, its part size, the parts to keep
        and the composite SHA-256 it recorded when it started: ``None`` when
        it recorded no digest (a state file of an early sts-bridge), ``""``
        when it recorded a whole-file SHA-256 (this one computes none, so
        such an upload is never continued).
        """
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
            or part_size < MIN_PART_SIZE
        ):
            return None
        if state.get("size") != size:
            # The file changed size since that run: none of its parts can be
            # kept; abort it rather than leave it (and its storage) behind.
            log.info("the file changed since the interrupted upload of %s; aborting it", spec.key)
            self.abort(spec.full_key, upload_id)
            with contextlib.suppress(OSError):
                state_path.unlink()
            return None
        try:
            # ListParts, not ListMultipartUploads: it names the object, so the
            # workspace credentials may call it; listing uploads names the
            # bucket, which a session policy cannot confine to a prefix.
            stored = self._list_parts(spec.full_key, upload_id)
        except ObjectNotFoundError:  # NoSuchUpload: completed or aborted since
            log.info("the interrupted upload of %s is gone; starting again", spec.key)
            with contextlib.suppress(OSError):
                state_path.unlink()
            return None
        except Exception as exc:
            log.warning("cannot resume the upload of %s (%s); starting again", spec.key, exc)
            return None
        keep: dict[int, tuple[str, bytes]] = {}
        count = max(1, math.ceil(size / part_size))
        for number, (etag, part_bytes) in stored.items():
            if not 1 <= number <= count or part_bytes != part_length(number, part_size, size):
                continue
            data = pread_exact(fd, part_bytes, (number - 1) * part_size)
            if hashlib.md5(data, usedforsecurity=False).hexdigest() == etag:
                keep[number] = (etag, hashlib.sha256(data).digest())
            else:
                log.info(
                    "part %d of %s differs from the file; uploading it again", number, spec.key
                )
        recorded = state.get("composite_sha256")
        if not isinstance(recorded, str):
            recorded = "" if isinstance(state.get("sha256"), str) else None
        return upload_id, part_size, keep, recorded

    # ---------------------------------------------------------- records
    def unfinished(self, full_prefix: str) -> list[UnfinishedUpload]:
        """The recorded uploads under ``full_prefix`` of this bucket the store still holds.

        One ListParts per record (it names the object, so workspace
        credentials may call it); a record of an upload the store no longer
        knows (NoSuchUpload: completed or aborted meanwhile) is removed.
        """
        from sts_bridge.s3.upload_records import read_records, remove_record, upload_running

        found: list[UnfinishedUpload] = []
        for rec in read_records(self.records_dir()):
            if rec.bucket != self.ws.bucket or not rec.key.startswith(full_prefix):
                continue
            if rec.endpoint is not None and rec.endpoint != self.ws.endpoint_url:
                continue
            running = upload_running(rec.path)
            try:
                parts = self._list_parts(rec.key, rec.upload_id)
            except ObjectNotFoundError:
                if not running:
                    remove_record(rec.path)
                continue
            found.append(
                UnfinishedUpload(
                    key=self.user_key(rec.key),
                    upload_id=rec.upload_id,
                    started=rec.started,
                    parts=len(parts),
                    size=sum(max(size, 0) for _, size in parts.values()),
                    source=rec.source,
                    running=running,
                    record=str(rec.path),
                )
            )
        return found

    def abort_unfinished(self, upload: UnfinishedUpload) -> None:
        """AbortMultipartUpload of a recorded upload, then its record is removed.

        Raises :class:`TransferError` while a process still runs it, the
        store's error when the store does not confirm the abort (the record
        stays, to try again).
        """
        from sts_bridge.s3.upload_records import remove_record, upload_running

        record = Path(upload.record)
        if upload_running(record):
            raise TransferError(
                f"the upload of {upload.key!r} is running in another process",
                hint="stop that process first (Ctrl-C), or let it finish",
            )
        from sts_bridge.s3.keys import workspace_key

        self.call(
            "DELETE",
            workspace_key(self.ws.prefix, upload.key),
            f"aborting the upload of {upload.key!r}",
            query={"uploadId": upload.upload_id},
            ok=frozenset({200, 204, 404}),  # 404: already gone
        )
        remove_record(record)

    def _list_parts(self, full_key: str, upload_id: str) -> dict[int, tuple[str, int]]:
        parts: dict[int, tuple[str, int]] = {}
        query = {"uploadId": upload_id}
        while True:
            resp = self.call("GET", full_key, "ListParts", query=query)
            data = resp.data
            for p in xml_blocks(data, "Part"):
                parts[int(xml_text(p, "PartNumber"))] = (
                    strip_etag(xml_text(p, "ETag")),
                    int(xml_text(p, "Size") or -1),
                )
            marker = xml_text(data, "NextPartNumberMarker")
            if xml_text(data, "IsTruncated") != "true" or not marker:
                return parts
            query = {"uploadId": upload_id, "part-number-marker": marker}


def _stop_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` when Ctrl-C or SIGTERM came (see
    :mod:`sts_bridge.interrupts`): the end of a stream may then be its producer
    dying of the same signal, and a cut-off stream is never stored as a whole."""
    from sts_bridge.interrupts import arrived

    if arrived() is not None:
        raise KeyboardInterrupt


def _as_transfer_error(exc: BaseException, key: str) -> StsBridgeError:
    if isinstance(exc, StsBridgeError):
        return exc
    if isinstance(exc, OSError):
        return TransferError(f"uploading {key!r} failed: {exc}")
    return TransferError(f"uploading {key!r} failed: {type(exc).__name__}: {exc}")
