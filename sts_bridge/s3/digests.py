"""A file cut in parts, and its SHA-256 (whole and per part) in one read.

A multipart upload records the whole object's SHA-256 in its metadata, so
the file is hashed before its first part is sent (:func:`file_digests`).
A command that knows the file before it has loaded the engine (``sts-bridge
upload big.bin``) starts that pass in a background thread
(:func:`start_digests`): hashlib releases the GIL, so the hashing runs on the
other core while Python imports the rest and reads the cached credentials.
The engine then takes the result (:func:`taken_digests`) only when the file
has the same identity (inode, size, mtime, ctime) before the pass, after it
and when the engine opened it; otherwise it hashes again.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import math
import os
import threading
from pathlib import Path

from sts_bridge.errors import TransferError
from sts_bridge.s3.config import MiB

__all__ = [
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "choose_part_size",
    "file_digests",
    "file_identity",
    "part_length",
    "pread_exact",
    "start_digests",
    "taken_digests",
]

MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * 1024 * MiB

FileIdentity = tuple[int, int, int, int, int]
Digests = tuple[str, list[bytes]]


def file_identity(st: os.stat_result) -> FileIdentity:
    """What changes when a file is rewritten, appended to or replaced: inode,
    size, mtime and ctime (ns; ctime also moves when mtime is set back)."""
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def choose_part_size(size: int, part_size: int) -> int:
    """The part size for ``size`` bytes: ``part_size`` unless 10,000 parts are not enough."""
    part_size = max(part_size, MIN_PART_SIZE)
    if size > part_size * MAX_PARTS:
        part_size = math.ceil(size / MAX_PARTS / MiB) * MiB
    if part_size > MAX_PART_SIZE:
        raise TransferError(f"{size} bytes is more than S3 can store in one object")
    return part_size


def part_length(number: int, part_size: int, size: int) -> int:
    """Bytes in part ``number`` (1-based) of a ``size``-byte file cut in ``part_size`` parts."""
    return max(0, min(part_size, size - (number - 1) * part_size))


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes of ``fd`` at ``offset``; :class:`TransferError` when the file is shorter."""
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


def file_digests(fd: int, size: int, part_size: int) -> Digests:
    """The SHA-256 (hex) of ``size`` bytes of ``fd`` and the SHA-256 digest of each part.

    One read of the file; the part digests are computed in a helper thread
    while this thread feeds the whole-object hash (hashlib releases the GIL),
    so the pass costs about one SHA-256 of the file in wall time. Raises
    :class:`TransferError` when the file is shorter than ``size``.
    """
    whole = hashlib.sha256()
    count = max(1, math.ceil(size / part_size))
    with cf.ThreadPoolExecutor(1, thread_name_prefix="sts-bridge-hash") as pool:
        futures: list[cf.Future[bytes]] = []
        for number in range(1, count + 1):
            data = pread_exact(fd, part_length(number, part_size, size), (number - 1) * part_size)
            # at most two parts in memory: wait for the digest before the one before
            if len(futures) >= 2:
                futures[-2].result()
            futures.append(pool.submit(lambda d: hashlib.sha256(d).digest(), data))
            whole.update(data)
            del data
        return whole.hexdigest(), [f.result() for f in futures]


class _Ahead:
    """One background pass: its thread, and the result with the identity it is valid for."""

    def __init__(self, path: Path, part_size: int) -> None:
        self.path = path
        self.part_size = part_size
        self.result: tuple[FileIdentity, Digests] | None = None
        self.thread = threading.Thread(target=self._run, name="sts-bridge-hash-ahead", daemon=True)

    def _run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # the engine meets the same problem and reports it
        try:
            before = file_identity(os.fstat(fd))
            digests = file_digests(fd, before[2], self.part_size)
            if file_identity(os.fstat(fd)) == before:
                self.result = (before, digests)
        except (OSError, TransferError):
            pass  # changed or unreadable: the engine hashes (and reports) itself
        finally:
            os.close(fd)


_ahead: dict[tuple[str, int], _Ahead] = {}
_ahead_lock = threading.Lock()


def start_digests(path: str | os.PathLike[str], part_size: int) -> None:
    """Start hashing the file at ``path`` (parts of ``part_size``) in a daemon thread."""
    ahead = _Ahead(Path(path), part_size)
    key = (os.path.realpath(path), part_size)
    with _ahead_lock:
        if key in _ahead:
            return
        _ahead[key] = ahead
    ahead.thread.start()


def taken_digests(path: str | os.PathLike[str], fd: int, part_size: int) -> Digests | None:
    """The digests started ahead for ``path`` if they are of the file open as ``fd``
    (same identity), waiting for the pass to end; ``None`` when there are none."""
    with _ahead_lock:
        ahead = _ahead.pop((os.path.realpath(path), part_size), None)
    if ahead is None:
        return None
    ahead.thread.join()
    if ahead.result is None:
        return None
    identity, digests = ahead.result
    return digests if identity == file_identity(os.fstat(fd)) else None
