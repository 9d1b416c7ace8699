"""Local records of the multipart uploads this machine started.

Workspace credentials cannot list a bucket's multipart uploads
(ListMultipartUploads names the bucket, which a session policy cannot
confine to a prefix), so an upload whose process died (``kill -9``, a power
cut) could never be found again, and its parts would take space until the
store's lifecycle rule removes them. Every multipart upload is therefore
recorded here after CreateMultipartUpload answered and before its first
part is sent, and the record is removed once the upload is completed or
aborted. What a record holds (endpoint, bucket, key, upload id, source, when
it started) is enough to abort the upload with the workspace credentials
alone (AbortMultipartUpload names the object); it holds no credential.

A record is a 0600 JSON file written atomically in a 0700 folder, the
``uploads/`` folder of the cache directory (the same folder and the same
file as the resume state of a file upload, see :mod:`sts_bridge.s3.upload`).
While its upload runs, the process holds the record's lock file
(``<record>.lock``, ``flock``): a record whose lock is free was left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

__all__ = [
    "UploadRecord",
    "read_records",
    "record_fields",
    "record_lock_path",
    "recorded_upload",
    "records_dir",
    "remove_record",
    "stream_record_path",
    "upload_running",
    "write_record",
]

log = logging.getLogger("sts_bridge.s3.transfers")


@dataclass(frozen=True)
class UploadRecord:
    """One recorded multipart upload (``key`` is the full key in the bucket)."""

    path: Path
    endpoint: str | None  # None in a resume state written before records had it
    bucket: str
    key: str
    upload_id: str
    source: str | None  # the file uploaded; None for a stream
    started: datetime | None


def stream_record_path(
    state_dir: Path, endpoint: str, bucket: str, key: str, upload_id: str
) -> Path:
    """Where the record of an upload that cannot resume (a stream) lives: one per upload id."""
    ident = "\n".join([endpoint, bucket, key, upload_id])
    return state_dir / f"upload-{hashlib.sha256(ident.encode()).hexdigest()[:40]}.json"


def records_dir(cache_dir: Path | None) -> Path:
    """Where the records of uploads started with the cache directory ``cache_dir`` live
    (``None``: the default cache directory)."""
    if cache_dir is None:
        from sts_bridge.config import default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir) / "uploads"


def record_lock_path(record: Path) -> Path:
    return record.with_suffix(".lock")


def record_fields(endpoint: str, bucket: str, key: str, upload_id: str) -> dict[str, object]:
    """The fields every record has (a file's resume state adds its own)."""
    return {
        "upload_id": upload_id,
        "endpoint": endpoint,
        "bucket": bucket,
        "key": key,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_record(path: Path, fields: dict[str, object]) -> None:
    from sts_bridge._files import atomic_write

    atomic_write(path, json.dumps(fields).encode())


@contextlib.contextmanager
def recorded_upload(
    state_dir: Path,
    endpoint: str,
    bucket: str,
    key: str,
    upload_id: str,
    source: str | None = None,
) -> Iterator[Path]:
    """Record the multipart upload ``upload_id`` of an upload that cannot
    resume (a stream, a file written through ``workspace://``) while it runs,
    its lock held.

    Entered after CreateMultipartUpload answered and before the first part;
    the caller removes the record (:func:`remove_record`) once the upload is
    completed or aborted, and keeps it when the abort cannot reach the store.
    A killed process leaves it: ``sts-bridge uploads`` lists it and aborts
    the upload. Raises ``OSError`` when the record cannot be written (the
    caller aborts: no part may be sent unrecorded).
    """
    from sts_bridge._files import file_lock

    path = stream_record_path(state_dir, endpoint, bucket, key, upload_id)
    fields = record_fields(endpoint, bucket, key, upload_id)
    fields["source"] = source
    with file_lock(record_lock_path(path), timeout=0.0):
        write_record(path, fields)
        yield path


def remove_record(path: Path) -> None:
    """Remove a record and its lock file (gone already: nothing to do)."""
    for name in (path, record_lock_path(path)):
        with contextlib.suppress(OSError):
            name.unlink()


def read_records(state_dir: Path) -> Iterator[UploadRecord]:
    """Every readable record in ``state_dir`` (unreadable or foreign files are skipped)."""
    try:
        names = sorted(state_dir.glob("*.json"))
    except OSError:
        return
    for path in names:
        doc = _read(path)
        if doc is None:
            continue
        upload_id, bucket, key = doc.get("upload_id"), doc.get("bucket"), doc.get("key")
        if not all(isinstance(v, str) and v for v in (upload_id, bucket, key)):
            continue
        endpoint = doc.get("endpoint")
        source = doc.get("source")
        yield UploadRecord(
            path=path,
            endpoint=endpoint if isinstance(endpoint, str) else None,
            bucket=str(bucket),
            key=str(key),
            upload_id=str(upload_id),
            source=source if isinstance(source, str) else None,
            started=_started(doc.get("started"), path),
        )


def _read(path: Path) -> dict[str, object] | None:
    """The record's JSON object, or ``None`` (not ours, not a regular file, corrupt)."""
    from sts_bridge._files import read_regular_file

    try:
        if hasattr(os, "getuid") and path.lstat().st_uid != os.getuid():
            log.warning("ignoring %s: owned by another user", path)
            return None
        doc = json.loads(read_regular_file(path).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.warning("ignoring the upload record %s: %s", path, getattr(exc, "strerror", exc))
        return None
    return doc if isinstance(doc, dict) else None


def _started(value: object, path: Path) -> datetime | None:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value)
    # a resume state written before records had the field: its file's time
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except OSError:
        return None


def upload_running(record: Path) -> bool:
    """Whether a process holds the record's lock now (its upload is running)."""
    from sts_bridge._files import LockTimeout, file_lock

    lock = record_lock_path(record)
    if not lock.exists():
        return False
    try:
        with file_lock(lock, timeout=0.0):
            return False
    except LockTimeout:
        return True
