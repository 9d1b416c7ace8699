"""The file objects of ``workspace://``: what ``WorkspaceFileSystem.open()`` returns.

A :class:`WorkspaceFile` is an fsspec ``AbstractBufferedFile`` whose ``.fs``
is the ``workspace://`` filesystem and whose ``.path`` is
``<workspace>/<key>``, so fsspec's wrappers that keep state per file
(``blockcache::``, ``simplecache::``, ``filecache::``, transactions) find
the file they opened. It composes the two engines of its workspace:

- reads are ranged GETs through :class:`~sts_bridge.s3.objects.ObjectIO`
  (one signed request per block, in the calling thread);
- a file that fits in one block is stored with one PUT through
  ``ObjectIO`` when it closes (its SHA-256 recorded, as ``pipe_file``
  does); a bigger one is a multipart upload through the workspace's
  ``s3fs`` instance, aborted when the file is discarded or a part fails,
  so no part is left behind. The upload is recorded
  (:mod:`sts_bridge.s3.upload_records`) from CreateMultipartUpload until it
  is completed or aborted, so one a killed process leaves is listed and
  aborted by ``sts-bridge uploads``.

Exclusive creation (``"xb"``) claims the key when the file is opened, with
a PUT of no bytes under ``If-None-Match: *``: the store decides atomically
(radosgw 16 honours the condition on PutObject, not on
CompleteMultipartUpload), so of two writers racing for one key exactly one
gets the file and the other a ``FileExistsError`` at ``open()``, as with
``O_EXCL`` on a local disk. Until the file is closed, readers see an empty
object, as they would see an empty local file.
"""

from __future__ import annotations

import contextlib
import errno
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsspec.spec import AbstractBufferedFile

from sts_bridge.errors import ObjectNotFoundError, PreconditionFailedError, StorageError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem
    from s3fs import S3FileSystem

    from sts_bridge.s3.objects import ObjectIO

__all__ = ["WorkspaceFile", "claim_key", "storage_os_error"]

#: S3's smallest part but the last.
_MIN_PART = 5 * 2**20


def storage_os_error(exc: StorageError, path: str) -> OSError:
    """The built-in error fsspec users catch for the store's answer about ``path``
    (zarr reads a missing chunk as ``FileNotFoundError``), with the SDK's message."""
    from sts_bridge.errors import StorageAccessDeniedError

    if isinstance(exc, ObjectNotFoundError):
        return FileNotFoundError(errno.ENOENT, str(exc), path)
    if isinstance(exc, StorageAccessDeniedError):
        return PermissionError(errno.EACCES, str(exc), path)
    if isinstance(exc, PreconditionFailedError):
        return FileExistsError(errno.EEXIST, str(exc), path)
    return OSError(errno.EIO, str(exc), path)


def claim_key(objects: ObjectIO, full_key: str, path: str, data: bytes = b"") -> str:
    """Store ``data`` under ``full_key`` only if no object is there (one conditional PUT).

    Returns the ETag. Raises ``FileExistsError`` when an object exists (the
    store answered 412 to ``If-None-Match: *``), or the error of the PUT.
    """
    try:
        return objects.put(full_key, data, exclusive=True)
    except PreconditionFailedError as exc:
        raise FileExistsError(errno.EEXIST, f"{path} exists already", path) from exc
    except StorageError as exc:
        raise storage_os_error(exc, path) from exc


class WorkspaceFile(AbstractBufferedFile):  # type: ignore[misc]
    """A buffered file of one workspace object (``rb``, ``wb``, ``xb``, ``ab``).

    :param fs: the ``workspace://`` filesystem (reported as ``.fs``).
    :param path: ``<workspace>/<key>`` (reported as ``.path``).
    :param objects: single-request reads and writes of the workspace's bucket.
    :param store: the workspace's s3fs instance (multipart uploads).
    :param bucket: the workspace's bucket.
    :param full_key: the object's key in the bucket (prefix included, confined).
    :param endpoint: the store's endpoint URL (named in the upload's record).
    :param records: the folder of upload records
        (:func:`~sts_bridge.s3.upload_records.records_dir`).

    Other arguments are ``AbstractBufferedFile``'s. In ``ab`` mode an
    existing object is read back into the buffer first (S3 objects cannot
    grow in place).
    """

    # Set by AbstractBufferedFile in write modes.
    buffer: io.BytesIO
    forced: bool
    offset: int | None

    def __init__(
        self,
        fs: AbstractFileSystem,
        path: str,
        mode: str = "rb",
        *,
        objects: ObjectIO,
        store: S3FileSystem,
        bucket: str,
        full_key: str,
        endpoint: str,
        records: Path,
        block_size: int | str = "default",
        autocommit: bool = True,
        cache_type: str = "readahead",
        cache_options: dict[str, Any] | None = None,
        size: int | None = None,
        **kwargs: Any,
    ) -> None:
        self._objects = objects
        self._store = store
        self._bucket = bucket
        self._full_key = full_key
        self._endpoint = endpoint
        self._records = records
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        # the running upload's record and its lock (see upload_records)
        self._record: Path | None = None
        self._record_lock = contextlib.ExitStack()
        if mode == "xb":
            claim_key(objects, full_key, path)
        existing = b""
        if mode == "ab":
            try:
                existing = objects.get(full_key)
            except ObjectNotFoundError:
                existing = b""
            except StorageError as exc:
                raise storage_os_error(exc, path) from exc
        if mode != "rb" and block_size not in ("default", None) and int(block_size) < _MIN_PART:
            raise ValueError(f"a file written to S3 needs block_size >= 5 MiB, not {block_size}")
        super().__init__(
            fs,
            path,
            mode=mode,
            block_size=block_size,
            autocommit=autocommit,
            cache_type=cache_type,
            cache_options=cache_options,
            size=size,
            **kwargs,
        )
        if existing:
            self.buffer.write(existing)
            self.loc = len(existing)

    def _fetch_range(self, start: int, end: int) -> bytes:
        try:
            return self._objects.get(self._full_key, start, end)
        except StorageError as exc:
            raise storage_os_error(exc, self.path) from exc

    # -- writing -----------------------------------------------------------------

    def flush(self, force: bool = False) -> None:
        """Send full blocks as parts of a multipart upload; on close (``force``)
        store the rest: one PUT when no part was sent, else the last part."""
        if self.closed:
            raise ValueError("Flush on closed file")
        if force and self.forced:
            raise ValueError("Force flush cannot be called more than once")
        if force:
            self.forced = True
        if self.readable():
            return
        if self.offset is None:
            self.offset = 0
        data = self.buffer.getvalue()
        sent = 0
        try:
            while len(data) - sent >= self.blocksize:
                self._upload_part(data[sent : sent + self.blocksize])
                sent += self.blocksize
        except BaseException:
            self._abort()
            raise
        if sent:
            self.offset += sent
            self.buffer = io.BytesIO()
            self.buffer.write(data[sent:])
        if force and self.autocommit:
            self.commit()

    def commit(self) -> None:
        """Store what was written: one PUT, or the last part and the completion."""
        data = self.buffer.getvalue()
        if self._upload_id is None:
            try:
                self._objects.put(self._full_key, data)
            except StorageError as exc:
                raise storage_os_error(exc, self.path) from exc
        else:
            try:
                if data:
                    self._upload_part(data)
                self._store.call_s3(
                    "complete_multipart_upload",
                    Bucket=self._bucket,
                    Key=self._full_key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
            except BaseException:
                self._abort()
                raise
            self._upload_id = None
            self._release_record(remove=True)
        self.offset = (self.offset or 0) + len(data)
        self.buffer = io.BytesIO()
        self._store.invalidate_cache(f"{self._bucket}/{self._full_key}")

    def discard(self) -> None:
        """Throw away what was written (no part is left behind)."""
        self._abort()
        self.buffer = io.BytesIO()

    def _upload_part(self, data: bytes) -> None:
        if self._upload_id is None:
            answer = self._store.call_s3(
                "create_multipart_upload", Bucket=self._bucket, Key=self._full_key
            )
            self._upload_id = answer["UploadId"]
            self._hold_record(self._upload_id)
        number = len(self._parts) + 1
        answer = self._store.call_s3(
            "upload_part",
            Bucket=self._bucket,
            Key=self._full_key,
            PartNumber=number,
            UploadId=self._upload_id,
            Body=data,
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def _hold_record(self, upload_id: str) -> None:
        """Record the upload before its first part (the record cannot be
        written: the upload is aborted, no part goes unrecorded)."""
        from sts_bridge.s3.upload_records import recorded_upload

        try:
            self._record = self._record_lock.enter_context(
                recorded_upload(
                    self._records, self._endpoint, self._bucket, self._full_key, upload_id
                )
            )
        except OSError as exc:
            self._abort()
            raise OSError(
                exc.errno, f"cannot record the upload in {self._records}: {exc.strerror}", self.path
            ) from exc

    def _release_record(self, remove: bool) -> None:
        """Let the record go: removed once the upload is completed or aborted,
        kept (unlocked) when the abort did not reach the store."""
        from sts_bridge.s3.upload_records import remove_record

        record, self._record = self._record, None
        if record is not None and remove:
            remove_record(record)
        self._record_lock.close()

    def _abort(self) -> None:
        upload_id, self._upload_id = self._upload_id, None
        self._parts = []
        if upload_id is None:
            return
        try:
            self._store.call_s3(
                "abort_multipart_upload",
                Bucket=self._bucket,
                Key=self._full_key,
                UploadId=upload_id,
            )
        except BaseException:
            # `sts-bridge uploads --abort` finishes the job later
            self._release_record(remove=False)
            raise
        self._release_record(remove=True)
