"""Result and progress types shared by the transfer modules.

:class:`UploadResult`, :class:`ObjectInfo` and :class:`PresignedUrl` are
public (re-exported by :mod:`sts_bridge.s3.transfers`); :class:`Progress`
serialises progress callbacks for the upload and download engines.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

__all__ = ["ObjectInfo", "PresignedUrl", "ProgressCallback", "UnfinishedUpload", "UploadResult"]

ProgressCallback = Callable[[int, int | None], None]
"""``progress(bytes_done, total_or_None)``; called from worker threads, serialised."""


# --------------------------------------------------------------------- results
@dataclass(frozen=True)
class UploadResult:
    """One uploaded object.

    ``key`` is relative to the workspace, ``uri`` is ``s3://bucket/full-key``,
    ``etag`` the server's ETag (without quotes), ``checksum`` the SHA-256
    (``sha256:<hex>``, or ``sha256:<hex>-<parts>`` composite for multipart),
    ``sha256`` the SHA-256 (hex) of the whole object as recorded in its
    ``x-amz-meta-sha256`` metadata by a single PUT (``None`` for a multipart
    upload, which records the composite of ``checksum`` instead).
    """

    key: str
    size: int
    etag: str
    checksum: str
    uri: str
    parts: int = 0
    resumed_parts: int = 0
    sha256: str | None = None


@dataclass(frozen=True)
class UnfinishedUpload:
    """A multipart upload this machine started and did not complete or abort.

    ``key`` is relative to the workspace; ``parts`` and ``size`` are what the
    store holds of it now; ``source`` is the file uploaded (``None``: a
    stream); ``running``: a live process is uploading it right now (a file
    upload that was interrupted resumes when the same upload runs again).
    """

    key: str
    upload_id: str
    started: datetime | None
    parts: int
    size: int
    source: str | None
    running: bool
    record: str  # the local record (see sts_bridge.s3.upload_records)


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


class Progress:
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
