"""Uploads, downloads, listing, deletes and presigned URLs for a workspace.

:class:`TransferEngine` does the work of ``Workspace``'s data operations; it
knows a :class:`TransferTarget` (bucket, prefix, endpoint, credentials),
never the TerrAPI client.

Transfer engine (why not s3transfer)
------------------------------------
On a small machine the client's CPU per byte decides throughput, and boto3
spends it badly on plain http: botocore SHA-256s every body byte for the
signature *and*, since 1.36, adds a CRC32 (``aws-chunked`` trailer) that
some S3-compatible servers reject; s3transfer then copies the data through
several Python file wrappers. Here every request of a transfer is our own,
signed with :class:`~sts_bridge.s3.signer.Signer` from a fresh
``credentials()`` snapshot (a transfer may outlive one set of STS
credentials) and sent over one connection pool; no boto3 client is built (it
cost about 0.2 CPU-s and 25 MB to import and make):

- uploads: each part is read once with ``os.pread``, hashed once with
  SHA-256 (hashlib releases the GIL) and sent with one ``sendall``, several
  parts at a time; small files go 16 at a time. Create / complete / abort
  multipart, ListMultipartUploads, ListParts and HEAD are small signed
  requests whose XML answers are read with a few regular expressions.
- downloads: the first ranged GET tells the size and ETag (no HEAD); the
  other ranges follow in parallel, each streamed with ``readinto`` into one
  reused buffer per thread and written with ``os.pwrite`` at its offset in a temp file
  that is renamed into place only when complete and checked; large
  downloads write with ``O_DIRECT`` on Linux (why: see :mod:`sts_bridge.s3.download`).

Listing and deletes still use the workspace's boto3 client.

Modules
-------
This module is the public face (the engine, the result types,
:class:`PresignClampedWarning`, :func:`parse_duration`); the engine lives in
the other modules of :mod:`sts_bridge.s3`, each with one job:

- :mod:`sts_bridge.s3.signed_http`: the signed HTTP client (over
  :mod:`sts_bridge.s3.transport`, urllib3), S3's XML answers, error mapping;
- :mod:`sts_bridge.s3.upload`: upload helpers, single PUTs, multipart
  uploads and resume (integrity and resume are described there);
- :mod:`sts_bridge.s3.download`: ranged parallel GETs, O_DIRECT writes and
  the checks of a download;
- :mod:`sts_bridge.s3.transfer_types`: the result and progress types.
"""

from __future__ import annotations

import builtins
import concurrent.futures as cf
import errno
import logging
import math
import os
import re
import stat
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar, Union

from sts_bridge.clock import utc_now
from sts_bridge.errors import (
    CredentialsError,
    InvalidArgumentError,
    InvalidKeyError,
    ObjectNotFoundError,
    TransferError,
)
from sts_bridge.s3.config import TransferConfig
from sts_bridge.s3.digests import choose_part_size
from sts_bridge.s3.errors import botocore_error_values, map_botocore_error
from sts_bridge.s3.keys import folder_prefix, relative_key, workspace_key, workspace_prefix
from sts_bridge.s3.signer import MAX_EXPIRES, Signer, StorePlace
from sts_bridge.s3.transfer_types import (
    ObjectInfo,
    PresignedUrl,
    Progress,
    ProgressCallback,
    UnfinishedUpload,
    UploadResult,
)
from sts_bridge.s3.transport import ConnectionPools

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

    from sts_bridge.s3.upload import (
        UploadEngine,
        UploadSpec,
        composite_checksum,
        matches_filters,
    )

# The upload and download engines (and the signed HTTP client under them) are
# imported by the methods that run them: a presign, a download or the import
# of this module for its types does not pay for the other direction's code
# (issue 19: every CLI command pays its imports). Names re-exported from
# sts_bridge.s3.upload are looked up on first access (PEP 562).
_FROM_UPLOAD = ("composite_checksum", "matches_filters")


def __getattr__(name: str) -> Any:
    if name in _FROM_UPLOAD:
        from sts_bridge.s3 import upload

        value = getattr(upload, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ObjectInfo",
    "PresignClampedWarning",
    "PresignedUrl",
    "ProgressCallback",
    "TransferConfig",
    "TransferEngine",
    "TransferTarget",
    "UnfinishedUpload",
    "UploadResult",
    "checked_headers",
    "choose_part_size",
    "composite_checksum",
    "matches_filters",
    "parse_duration",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
# Single-object deletes (stores without DeleteObjects) in flight.
_DELETE_THREADS = 4


Source = Union[str, "os.PathLike[str]", IO[bytes], bytes, bytearray, memoryview]

SkipCallback = Callable[[str, str], None]
"""``on_skip(path, reason)``: a directory upload leaves out ``path`` (not a regular file)."""


class PresignClampedWarning(UserWarning):
    """A presigned URL lives shorter than asked: the credentials expire first."""


# ------------------------------------------------------------- pure helpers
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """``"90"``, ``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` -> whole seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 900, 15m, 1h, 7d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not math.isfinite(seconds) or seconds > 2**62:  # "9...9w" would overflow int()
        shown = text if len(text) <= 24 else text[:20] + "..."
        raise ValueError(f"not a duration: {shown!r} is far too long (at most 7d)")
    return int(seconds)


def _check_source_and_key(source: object, key: object) -> None:
    """The types of an upload's arguments, checked before anything is read or sent."""
    if key is not None and not isinstance(key, str):
        raise InvalidKeyError(
            f"object key must be a string, not {type(key).__name__} {key!r}"[:160],
            hint="name the object, e.g. 'results/run-1/output.tif'",
        )
    readable = hasattr(source, "read") or isinstance(source, (bytes, bytearray, memoryview))
    if not readable and not isinstance(source, (str, os.PathLike)):
        raise InvalidArgumentError(
            f"cannot upload a {type(source).__name__}: give a path, bytes or a binary file object",
            hint="e.g. ws.upload('data.csv', 'in/data.csv') or ws.upload(b'...', 'k')",
        )


def _expiry_seconds(expires_in: object) -> int:
    """Whole seconds of a presign lifetime: an ``int`` / ``float`` of seconds or a
    ``timedelta``; ``True`` is not a duration (it would be a 1-second URL)."""
    if isinstance(expires_in, timedelta):
        seconds: float = expires_in.total_seconds()
    elif isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool):
        seconds = expires_in
    else:
        raise InvalidArgumentError(
            f"expires_in must be a number of seconds or a timedelta, "
            f"not {type(expires_in).__name__} {expires_in!r}"[:160],
            hint="e.g. expires_in=900 or timedelta(hours=1) (parse_duration('1h') reads text)",
        )
    if not math.isfinite(seconds):
        raise InvalidArgumentError(f"expires_in must be a finite number, not {seconds!r}")
    return int(seconds)


def _header_safe(value: object) -> bool:
    """Printable ASCII text only: a CR/LF would split the HTTP header it goes into."""
    return isinstance(value, str) and value.isascii() and value.isprintable()


#: S3's limit on user metadata (names and values together, in bytes).
MAX_METADATA_BYTES = 2048
#: The longest Content-Type sent: a store refuses longer header lines (400), and a
#: MIME type with its parameters is far shorter.
MAX_CONTENT_TYPE = 1024


def checked_headers(content_type: str | None, metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The user metadata and content type of an upload, checked before any request
    (:class:`InvalidArgumentError`); the metadata as a dict."""
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            f"metadata must be a mapping of names to values, not {type(metadata).__name__}",
            hint="e.g. metadata={'project': 'gep'}",
        )
    meta = dict(metadata or {})
    for name, value in meta.items():
        if (
            not isinstance(name, str)
            or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name)
            or not _header_safe(value)
        ):
            raise InvalidArgumentError(
                f"metadata {name!r} is not a valid header name/ASCII value"[:200],
                hint="use letters, digits and -_. in names, printable ASCII in values",
            )
    size = sum(len(n) + len(v) for n, v in meta.items())
    if size > MAX_METADATA_BYTES:
        raise InvalidArgumentError(
            f"metadata is {size} bytes; S3 allows {MAX_METADATA_BYTES} (names and values)",
            hint="store large descriptions in an object of their own",
        )
    if content_type is not None and not _header_safe(content_type):
        raise InvalidArgumentError(
            f"content type {content_type!r} is not printable ASCII on one line"[:200],
            hint="give a MIME type such as 'text/csv' or 'application/octet-stream'",
        )
    if content_type is not None and len(content_type) > MAX_CONTENT_TYPE:
        raise InvalidArgumentError(
            f"content type is {len(content_type)} characters long; at most "
            f"{MAX_CONTENT_TYPE} are sent",
            hint="give a MIME type such as 'text/csv' or 'application/octet-stream'",
        )
    return meta


# -------------------------------------------------------------------- engine
class TransferTarget(StorePlace, Protocol):
    """What the engine knows of a workspace: where, and with which credentials.

    ``prefix`` ends with ``/`` or is empty; ``credentials()`` returns a valid
    snapshot, ``credentials_for(n)`` one that lives ``n`` more seconds when
    a refresh can buy that; ``s3_client()`` is a boto3 S3 client with
    self-refreshing credentials (listing and deletes).
    """

    @property
    def prefix(self) -> str: ...
    @property
    def verify(self) -> bool | str: ...
    def credentials(self) -> Any: ...
    def credentials_for(self, min_lifetime: float) -> Any: ...
    def s3_client(self) -> S3Client: ...


class TransferEngine:
    """Uploads, downloads, listing, deletes and presigning for one target.

    Every relative key is checked by :func:`sts_bridge.s3.keys.workspace_key`
    before any request: an unsafe key raises :class:`InvalidKeyError`.
    ``config`` holds every transfer knob (default: ``TransferConfig()``);
    ``state_dir`` holds the resume state of multipart uploads (default: the
    default cache directory's ``uploads/``).
    """

    def __init__(
        self,
        target: TransferTarget,
        config: TransferConfig | None = None,
        *,
        state_dir: Path | None = None,
    ) -> None:
        self.target = target
        self.config = TransferConfig() if config is None else config
        self.state_dir = state_dir
        # None: every transfer opens its own connections and closes them.
        self.connections: ConnectionPools | None = None
        # The signer of the last presign, and what it was made from: a batch
        # of one-key presigns (`sts-bridge run`) derives the signing key once.
        self._presigner: tuple[tuple[Any, ...], Signer] | None = None

    def reuse_connections(self, at_once: int = 1) -> None:
        """From now on, transfers share one connection pool per endpoint and
        leave it open for the next (many small transfers in one process,
        ``at_once`` of them in flight together); :meth:`close` closes the
        connections."""
        if self.connections is None:
            self.connections = ConnectionPools(at_once)

    def close(self) -> None:
        """Close the connections kept by :meth:`reuse_connections` (if any)."""
        if self.connections is not None:
            self.connections.close()

    # ---------------------------------------------------------------- upload
    def upload(
        self,
        source: Source,
        key: str | None = None,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
        resumable: bool = True,
    ) -> UploadResult:
        """Upload one file or one binary stream; its :class:`UploadResult`.

        - file: ``key`` defaults to the file name; a ``key`` ending in ``/``
          is a folder the file goes into.
        - stream (``.read()``) or bytes: ``key`` is required; the length may
          be unknown (multipart once it exceeds one part).

        A directory goes through :meth:`upload_directory`. Large files go
        multipart (parts of ``config.part_size``, by default chosen by
        :func:`choose_part_size`; ``config.part_concurrency`` at a time)
        and resume after an interruption (see :mod:`sts_bridge.s3.upload`).
        ``progress(done, total)`` reports bytes. Raises
        :class:`InvalidKeyError` (before any request),
        :class:`InvalidArgumentError` for bad metadata or content type,
        :class:`TransferError` (nothing left behind; also, before any
        request, for a directory or a path that is not a file),
        :class:`StorageAccessDeniedError`.
        """
        meta = checked_headers(content_type, metadata)
        _check_source_and_key(source, key)
        if not isinstance(source, (bytes, bytearray, memoryview)) and not hasattr(source, "read"):
            path = Path(os.fspath(source))  # type: ignore[arg-type]
            if path.is_dir():
                raise TransferError(
                    f"{path} is a directory",
                    hint="upload a directory with upload_directory()",
                )
        specs = self._plan_upload(source, key, content_type, meta, None, None)
        engine = self._upload_engine(resumable)
        tracker = Progress(progress, specs[0].size)
        try:
            spec = specs[0]
            if spec.stream is not None:
                return engine.upload_stream(spec, tracker)
            return engine.upload_file(spec, tracker)
        finally:
            engine.close()

    def upload_directory(
        self,
        path: str | os.PathLike[str],
        key: str | None = None,
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
        resumable: bool = True,
        on_skip: SkipCallback | None = None,
    ) -> builtins.list[UploadResult]:
        """Upload a directory recursively; one :class:`UploadResult` per file, in path order.

        One object per file whose relative path passes ``include``/``exclude``
        (see :func:`matches_filters`), under ``key`` (default: the
        directory's name; ``""`` = workspace root). Small files go
        ``config.file_concurrency`` at a time, large ones one after the
        other with their parts in parallel. Raises :class:`InvalidKeyError`
        (before any request), ``ValueError`` for an invalid include/exclude
        pattern (e.g. ``"["``), :class:`InvalidArgumentError` for bad
        metadata or content type, :class:`TransferError` (nothing left
        behind; also, before any request, for a path that is not a
        directory, a folder that cannot be read anywhere in the tree, or
        patterns that leave no file), :class:`StorageAccessDeniedError`.

        What is not a regular file (a FIFO, a socket, a device, a dangling
        link, a link loop, a link to a folder) is never uploaded: without
        ``on_skip`` the first one fails the upload before any request
        (:class:`TransferError`); with it, ``on_skip(path, reason)`` is
        called for each and the other files are uploaded.
        """
        meta = checked_headers(content_type, metadata)
        _check_source_and_key(path, key)
        folder = Path(os.fspath(path))
        if not folder.is_dir():
            raise TransferError(
                f"{folder} is not a directory", hint="upload a file or a stream with upload()"
            )
        specs = self._plan_upload(
            folder, key, content_type, meta, include, exclude, on_skip=on_skip
        )
        return self.upload_planned(specs, progress=progress, resumable=resumable)

    def plan_uploads(
        self,
        sources: Sequence[tuple[Source, str | None]],
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        on_skip: SkipCallback | None = None,
    ) -> builtins.list[UploadSpec]:
        """Every object that uploading ``(source, key)`` pairs would write, checked,
        before any request: keys, headers, patterns, and that no two sources map
        to one key (:class:`InvalidArgumentError`: the second would overwrite
        the first). ``include``/``exclude`` apply to every file, a named one
        too (by its name); a named file they leave out is given to
        ``on_skip`` (or refused, without it), like what is not a regular file
        in a directory (see :meth:`upload_directory`). Carry the plan out with
        :meth:`upload_planned`."""
        from sts_bridge.s3.upload import check_patterns

        meta = checked_headers(content_type, metadata)
        check_patterns(include, exclude)
        specs: builtins.list[UploadSpec] = []
        origin: dict[str, str] = {}
        for source, key in sources:
            _check_source_and_key(source, key)
            named = "-" if hasattr(source, "read") else str(source)
            planned = self._plan_upload(
                source, key, content_type, meta, include, exclude, on_skip=on_skip
            )
            for spec in planned:
                where = str(spec.source) if spec.source is not None else named
                if spec.full_key in origin:
                    raise InvalidArgumentError(
                        f"{origin[spec.full_key]} and {where} would both be uploaded to "
                        f"{spec.key!r}; nothing was sent",
                        hint="upload them with different --to destinations, one at a time",
                    )
                origin[spec.full_key] = where
                specs.append(spec)
        return specs

    def upload_planned(
        self,
        specs: Sequence[UploadSpec],
        *,
        progress: ProgressCallback | None = None,
        resumable: bool = True,
    ) -> builtins.list[UploadResult]:
        """Upload what :meth:`plan_uploads` planned; one :class:`UploadResult` per spec."""
        engine = self._upload_engine(resumable)
        streams = [s for s in specs if s.stream is not None]
        files = [s for s in specs if s.stream is None]
        tracker = Progress(progress, None if streams else sum(s.size or 0 for s in files))
        try:
            done = {s.full_key: engine.upload_stream(s, tracker) for s in streams}
            if files:
                results = self._upload_many(engine, files, tracker)
                for spec, result in zip(files, results, strict=True):
                    done[spec.full_key] = result
            return [done[s.full_key] for s in specs]
        finally:
            engine.close()

    def _upload_engine(self, resumable: bool) -> UploadEngine:
        from sts_bridge.s3.upload import UploadEngine

        return UploadEngine(
            self.target,
            self.config,
            resumable=resumable,
            state_dir=self.state_dir,
            pools=self.connections,
        )

    def _plan_upload(
        self,
        source: Source,
        key: str | None,
        content_type: str | None,
        metadata: Mapping[str, str],
        include: Sequence[str] | None,
        exclude: Sequence[str] | None,
        *,
        on_skip: SkipCallback | None = None,
    ) -> builtins.list[UploadSpec]:
        """Every object to write, keys checked, before any request."""
        from sts_bridge.s3.upload import (
            UploadSpec,
            check_patterns,
            guess_content_type,
            matches_filters,
            skip_reason,
        )

        def skipped(where: Path, reason: str) -> None:
            if on_skip is None:
                raise TransferError(
                    f"{where} is {reason}; nothing was uploaded",
                    hint="remove it or leave it out with exclude=[...] (--exclude); "
                    "pass on_skip= to upload the other files without it",
                )
            on_skip(str(where), reason)

        import io

        def spec(
            path: Path | None, stream: IO[bytes] | None, rel: str, size: int | None
        ) -> UploadSpec:
            full = workspace_key(self.target.prefix, rel)
            return UploadSpec(
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
            return [spec(None, source, key, None)]  # type: ignore[arg-type]
        path = Path(os.fspath(source))  # type: ignore[arg-type]
        check_patterns(include, exclude)
        if path.is_dir():
            if key is None:
                base = path.resolve().name + "/"
            elif key in ("", "/"):
                base = ""
            else:
                base = key.rstrip("/") + "/"
            found: builtins.list[UploadSpec] = []
            unreadable: builtins.list[OSError] = []
            filtered_out = 0
            for root, dirs, files in os.walk(path, onerror=unreadable.append):
                dirs.sort()
                for dname in dirs:
                    if os.path.islink(os.path.join(root, dname)):  # os.walk does not follow it
                        rel = Path(root, dname).relative_to(path).as_posix()
                        if matches_filters(rel, include, exclude):
                            skipped(Path(root, dname), skip_reason(Path(root, dname)) or "a link")
                for fname in sorted(files):
                    full_path = Path(root, fname)
                    rel = full_path.relative_to(path).as_posix()
                    if not matches_filters(rel, include, exclude):
                        filtered_out += 1
                        continue
                    try:  # one stat per file: its type and its size
                        st = os.stat(full_path)
                    except OSError as exc:  # a dangling link, a loop: not a file
                        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
                            skipped(full_path, skip_reason(full_path, error=exc) or "gone")
                            continue
                        raise
                    if not stat.S_ISREG(st.st_mode):
                        skipped(full_path, skip_reason(full_path, st) or "not a regular file")
                        continue
                    found.append(spec(full_path, None, base + rel, st.st_size))
            if unreadable:
                first = unreadable[0]
                more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
                raise TransferError(
                    f"cannot read the folder {first.filename}: {first.strerror}{more}; "
                    "nothing was uploaded",
                    hint="fix its permissions, or upload the readable folders one by one",
                )
            if not found and filtered_out:
                raise TransferError(
                    f"none of the {filtered_out} file(s) under {path} passes the include/"
                    "exclude patterns; nothing was uploaded",
                    hint="check the patterns: a pattern without '/' matches file names "
                    "('*.tif'), one with '/' the path relative to the folder",
                )
            return found
        if not path.is_file():
            reason = skip_reason(path) or "not a file or directory"
            raise TransferError(f"{path} is {reason}", hint="check the path")
        if (include or exclude) and not matches_filters(path.name, include, exclude):
            skipped(path, "left out by the include/exclude patterns")
            return []
        if key is None:
            key = path.name
        elif key.endswith("/"):
            key = key + path.name
        return [spec(path, None, key, path.stat().st_size)]

    def _upload_many(
        self, engine: UploadEngine, specs: Sequence[UploadSpec], tracker: Progress
    ) -> builtins.list[UploadResult]:
        # Small files go several at a time (latency-bound); large files one
        # after the other, each with its own concurrent parts.
        small = [s for s in specs if (s.size or 0) < engine.threshold]
        large = [s for s in specs if (s.size or 0) >= engine.threshold]
        results: dict[str, UploadResult] = {}
        if len(small) == 1:  # one file: no thread to start for it
            results[small[0].key] = engine.upload_file(small[0], tracker)
        elif small:
            with cf.ThreadPoolExecutor(
                min(engine.small_concurrency, len(small)), thread_name_prefix="sts-bridge-put"
            ) as pool:
                for res in pool.map(lambda s: engine.upload_file(s, tracker), small):
                    results[res.key] = res
        for s in large:
            results[s.key] = engine.upload_file(s, tracker)
        return [results[s.key] for s in specs]

    def unfinished_uploads(self, prefix: str = "") -> builtins.list[UnfinishedUpload]:
        """Multipart uploads started here and left behind (a killed process), under ``prefix``.

        Every multipart upload is recorded locally before its first part
        (:mod:`sts_bridge.s3.upload_records`): workspace credentials cannot
        list a bucket's uploads, so the records are how they are found.
        Uploads running in another process now come with ``running=True``.
        """
        full_prefix = workspace_prefix(self.target.prefix, prefix)
        engine = self._upload_engine(True)
        try:
            return engine.unfinished(full_prefix)
        finally:
            engine.close()

    def abort_upload(self, upload: UnfinishedUpload) -> None:
        """Abort one of :meth:`unfinished_uploads` (its parts are deleted) and forget it.

        Raises :class:`TransferError` while another process runs it, a
        storage error when the store does not confirm it (then it stays listed).
        """
        engine = self._upload_engine(True)
        try:
            engine.abort_unfinished(upload)
        finally:
            engine.close()

    # -------------------------------------------------------------- download
    def download(
        self,
        key: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> Path:
        """Download ``key`` to ``dest`` (a file, or a directory to put it in).

        Ranged GETs of ``config.range_size`` bytes, ``config.range_concurrency``
        at a time, each
        signed with fresh credentials. A regular file appears complete or not
        at all (temp file + rename); temp files that killed downloads into the
        same destination left are removed first. A symlink is written
        through: its target is what gets replaced. A FIFO or a character
        device (``/dev/stdout``, ``/dev/null``) is streamed into in order and
        never replaced (see also :meth:`download_fileobj`). Checked: the
        size, and the MD5 when the ETag is one (single-part objects). Returns
        the path written. Raises :class:`ObjectNotFoundError` when there is no
        such object, :class:`TransferError` when the destination is a
        directory (before any request) or the transfer failed.
        """
        from sts_bridge.s3.download import (
            DownloadEngine,
            clean_stale_parts,
            fd_writer,
            resolve_target,
        )

        full = workspace_key(self.target.prefix, key)
        target, streamed = resolve_target(key, dest)
        engine = DownloadEngine(self.target, self.config, pools=self.connections)
        try:
            if streamed:
                fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    engine.download_stream(full, key, fd_writer(fd, target), progress)
                finally:
                    os.close(fd)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                clean_stale_parts(target)
                engine.download(full, key, target, progress)
        finally:
            engine.close()
        return target

    def download_fileobj(
        self,
        key: str,
        fileobj: IO[bytes],
        *,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Write object ``key`` into the binary file object ``fileobj``, in order.

        One ranged GET at a time (``config.range_size`` bytes), resumed where a
        connection broke; the size and a single-part MD5 are checked as the
        bytes pass, so a failed check raises after the bytes were written.
        Returns the size. Raises :class:`ObjectNotFoundError`, :class:`TransferError`.
        """
        from sts_bridge.s3.download import DownloadEngine

        full = workspace_key(self.target.prefix, key)
        engine = DownloadEngine(self.target, self.config, pools=self.connections)
        try:
            # bytes(): the engine reuses its buffer, a file object may keep what it gets

            def write(view: memoryview) -> None:
                fileobj.write(bytes(view))

            return engine.download_stream(full, key, write, progress)
        finally:
            engine.close()

    # ------------------------------------------------------------------ list
    def list(
        self, prefix: str = "", *, recursive: bool = True, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        """Objects under relative ``prefix`` (S3 prefix semantics), page by page.

        With ``recursive=False`` only one level is listed and sub-folders
        come as ``ObjectInfo(is_prefix=True)``.
        """
        from sts_bridge.s3.signed_http import strip_etag

        full_prefix = workspace_prefix(self.target.prefix, prefix)
        kwargs: dict[str, Any] = {
            "Bucket": self.target.bucket,
            "Prefix": full_prefix,
            "MaxKeys": page_size,
        }
        if not recursive:
            kwargs["Delimiter"] = "/"
        s3 = self.target.s3_client()
        while True:
            try:
                resp, s3 = self._s3_call(lambda c: c.list_objects_v2(**kwargs), s3)
            except Exception as exc:
                raise map_botocore_error(exc, f"listing {prefix or 'the workspace'!r}") from exc
            for cp in resp.get("CommonPrefixes", []):
                yield ObjectInfo(
                    key=relative_key(self.target.prefix, cp["Prefix"]), size=0, is_prefix=True
                )
            for obj in resp.get("Contents", []):
                yield ObjectInfo(
                    key=relative_key(self.target.prefix, obj["Key"]),
                    size=int(obj.get("Size", 0)),
                    etag=strip_etag(obj.get("ETag")) or None,
                    last_modified=obj.get("LastModified"),
                )
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    def _s3_call(self, operation: Callable[[Any], _T], client: Any = None) -> tuple[_T, Any]:
        """``(operation(client), client)``; once more with new credentials (and
        the new client) when the store refuses the current ones (see
        :func:`~sts_bridge.s3.signed_http.credentials_refused`). ``client``
        defaults to ``s3_client()``."""
        from sts_bridge.s3.signed_http import credentials_refused

        client = client if client is not None else self.target.s3_client()
        try:
            return operation(client), client
        except Exception as exc:
            replace = getattr(self.target, "credentials_refused", None)
            if replace is None or not credentials_refused(*botocore_error_values(exc)):
                raise
            log.info("the store refused the credentials (%s); fetching new ones", exc)
            replace(self.target.credentials())
        client = self.target.s3_client()
        return operation(client), client

    # ---------------------------------------------------------------- delete
    def delete(self, key_or_prefix: str, *, recursive: bool = False) -> int:
        """Delete one object, or with ``recursive=True`` everything under a folder.

        ``recursive`` treats ``key_or_prefix`` as a folder (``results`` means
        ``results/``; only ``""`` or ``"/"`` mean the whole workspace) and also
        aborts unfinished multipart uploads there. Returns how many objects
        were deleted. Raises :class:`ObjectNotFoundError` for a missing single key,
        :class:`InvalidKeyError` (before any request) for an unsafe key or
        folder, e.g. one with an empty segment (``"//"``, ``"a//"``).
        """
        if not recursive:
            full = workspace_key(self.target.prefix, key_or_prefix)
            try:
                _, s3 = self._s3_call(lambda c: c.head_object(Bucket=self.target.bucket, Key=full))
            except Exception as exc:
                what = f"deleting {key_or_prefix!r}"
                err = map_botocore_error(exc, what, key=key_or_prefix)
                if not isinstance(err, ObjectNotFoundError):
                    raise err from exc
                if builtins.any(True for _ in self.list(key_or_prefix + "/", page_size=1)):
                    raise ObjectNotFoundError(
                        f"{key_or_prefix!r} is a folder, not an object",
                        status=404,
                        key=key_or_prefix,
                        hint="delete it with recursive=True (CLI: --recursive)",
                    ) from exc
                raise err from exc
            try:
                s3.delete_object(Bucket=self.target.bucket, Key=full)
            except Exception as exc:
                what = f"deleting {key_or_prefix!r}"
                raise map_botocore_error(exc, what, key=key_or_prefix) from exc
            return 1
        sub = folder_prefix(key_or_prefix)
        full_prefix = workspace_prefix(self.target.prefix, sub)
        deleted = 0
        bulk = [True]
        batch: builtins.list[str] = []
        for info in self.list(sub):
            batch.append(self.target.prefix + info.key)
            if len(batch) == 1000:
                deleted += self._delete_batch(self.target.s3_client(), batch, bulk)
                batch = []
        if batch:
            deleted += self._delete_batch(self.target.s3_client(), batch, bulk)
        self._abort_uploads_under(self.target.s3_client(), full_prefix)
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
                    Bucket=self.target.bucket,
                    Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
                )
            except Exception as exc:
                # botocore >= 1.36 sends a CRC32 instead of Content-MD5, which some
                # S3-compatible servers refuse, and radosgw 16 answers 403 to
                # DeleteObjects under a prefix-scoped session policy that allows
                # DeleteObject: fall back to one DELETE per object, whose own
                # errors are then the real answer.
                code, status = botocore_error_values(exc)
                log.info("DeleteObjects refused (%s, HTTP %s); deleting one by one", code, status)
                bulk[0] = False
            else:
                errors = resp.get("Errors", [])
                if errors:
                    first = errors[0]
                    raise TransferError(
                        f"{len(errors)} of {len(keys)} objects were not deleted, e.g. "
                        f"{self._user_key(str(first.get('Key')))!r}: {first.get('Code')}"
                    )
                return len(keys)
        return self._delete_each(s3, keys)

    def _user_key(self, full_key: str) -> str:
        """``full_key`` as the user names it (errors never show the workspace prefix)."""
        prefix = self.target.prefix
        return full_key[len(prefix) :] if prefix and full_key.startswith(prefix) else full_key

    def _delete_each(self, s3: S3Client, keys: builtins.list[str]) -> int:
        def one(k: str) -> None:
            try:
                s3.delete_object(Bucket=self.target.bucket, Key=k)
            except Exception as exc:
                user_key = self._user_key(k)
                raise map_botocore_error(exc, f"deleting {user_key!r}", key=user_key) from exc

        with cf.ThreadPoolExecutor(_DELETE_THREADS) as pool:
            builtins.list(pool.map(one, keys))
        return len(keys)

    def _abort_uploads_under(self, s3: S3Client, full_prefix: str) -> None:
        try:
            resp = s3.list_multipart_uploads(Bucket=self.target.bucket, Prefix=full_prefix)
            for up in resp.get("Uploads", []):
                s3.abort_multipart_upload(
                    Bucket=self.target.bucket, Key=up["Key"], UploadId=up["UploadId"]
                )
        except Exception as exc:  # best effort: the objects are what was asked
            log.info("could not clean unfinished uploads under %s: %s", full_prefix, exc)

    # --------------------------------------------------------------- presign
    def presign(
        self,
        key: str,
        method: str = "GET",
        expires_in: int | timedelta = 3600,
        *,
        warn_stacklevel: int = 3,
    ) -> PresignedUrl:
        """A presigned URL for ``key`` (GET, PUT, HEAD or DELETE).

        The URL cannot outlive the credentials that sign it: temporary
        credentials are refreshed first when that buys a longer life, and
        ``expires_in`` is clamped to what is left (with a
        :class:`PresignClampedWarning`); ``expires_at`` is the real expiry.
        At most 7 days.
        """
        return self._presign([key], method, expires_in, stacklevel=warn_stacklevel)[0]

    def presign_many(
        self,
        keys: Iterable[str],
        method: str = "GET",
        expires_in: int | timedelta = 3600,
        *,
        warn_stacklevel: int = 3,
        on_clamp: Callable[[str], None] | None = None,
    ) -> builtins.list[PresignedUrl]:
        """Presigned URLs for many keys at once (fast: one signing key, one instant).

        ``on_clamp(message)``: told instead of a :class:`PresignClampedWarning`
        (warnings are process-wide state that threads would have to take turns at).
        """
        return self._presign(
            keys, method, expires_in, stacklevel=warn_stacklevel, on_clamp=on_clamp
        )

    def _presign(
        self,
        keys: Iterable[str],
        method: str,
        expires_in: int | timedelta,
        *,
        stacklevel: int,
        on_clamp: Callable[[str], None] | None = None,
    ) -> builtins.list[PresignedUrl]:
        if not isinstance(method, str) or method.upper() not in ("GET", "PUT", "HEAD", "DELETE"):
            raise ValueError(f"method must be GET, PUT, HEAD or DELETE, not {method!r}")
        method = method.upper()
        seconds = _expiry_seconds(expires_in)
        if not 1 <= seconds <= MAX_EXPIRES:
            raise ValueError(f"expires_in must be between 1 second and 7 days, not {seconds}s")
        if isinstance(keys, (str, bytes)):
            raise InvalidArgumentError(
                f"keys must be a list of object keys, not the {type(keys).__name__} {keys[:60]!r}",
                hint=f"write presign_many([{keys[:60]!r}]), or presign({keys[:60]!r}) for one",
            )
        key_list = builtins.list(keys)
        prefix = self.target.prefix
        full_keys = [workspace_key(prefix, k) for k in key_list]
        creds = self.target.credentials_for(min_lifetime=seconds)
        precise_now = utc_now()
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
                message = (
                    f"presigned URL valid for {effective}s, not {seconds}s: the workspace "
                    f"credentials that sign it expire at {expiry.isoformat()}"
                )
                if on_clamp is not None:
                    on_clamp(message)
                else:
                    warnings.warn(message, PresignClampedWarning, stacklevel=stacklevel)
        urls = self._signer_for(creds).presign_many(full_keys, method, effective, now=now)
        expires_at = now + timedelta(seconds=effective)
        return [
            PresignedUrl(url=u, method=method, key=k, expires_at=expires_at)
            for u, k in zip(urls, key_list, strict=True)
        ]

    def _signer_for(self, creds: Any) -> Signer:
        """A signer of ``creds`` for the target's place now (the same one while neither changes)."""
        t = self.target
        made_of = (creds, t.endpoint_url, t.bucket, t.region, t.addressing_style)
        last = self._presigner  # one tuple: read and written atomically
        if last is not None and last[0][0] is creds and last[0][1:] == made_of[1:]:
            return last[1]
        signer = Signer.for_place(t, creds)
        self._presigner = (made_of, signer)
        return signer
