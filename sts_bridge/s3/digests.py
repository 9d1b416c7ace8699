"""A file cut in parts, and the SHA-256 of each part in one read.

A multipart upload records S3's composite SHA-256 of the object (the
SHA-256 of the concatenated part digests, :func:`composite_sha256`) and its
part size in its metadata, so the file is hashed before its first part is
sent (:func:`file_digests`). Each byte is hashed once: the part digests
give the composite and sign each UploadPart; no whole-file hash is computed.
A command that knows the file before it has loaded the engine (``sts-bridge
upload big.bin``) starts that pass in a background thread
(:func:`start_digests`): hashlib releases the GIL, so the hashing runs on the
other core while Python imports the rest and reads the cached credentials.
The engine then takes the result (:func:`taken_digests`) only when the file
has the same identity (inode, size, mtime, ctime) before the pass, after it
and when the engine opened it; otherwise it hashes again.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from pathlib import Path

from sts_bridge.errors import TransferError
from sts_bridge.s3.config import MiB

__all__ = [
    "AUTO_MAX_PART_SIZE",
    "AUTO_PARTS",
    "DEFAULT_PART_SIZE",
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "choose_part_size",
    "composite_sha256",
    "file_digests",
    "file_identity",
    "part_length",
    "path_composite_sha256",
    "pread_exact",
    "start_digests",
    "taken_digests",
]

MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * 1024 * MiB

# The automatic part size (``TransferConfig.part_size=None``). Each part is a
# request with its own cost to the client and to the store: on 2 cores that
# radosgw shares with the client, 1 GiB in 128 parts of 8 MiB takes longer
# and more client CPU than in 16-64 MiB parts, while 100-300 MB files gain
# nothing from larger ones (docs/benchmark.md). Parts grow only up to a
# bound: a part is retried whole, so on a slow link a large part costs more
# each time it fails.
#: The part of a small file, and of every stream (its size is not known ahead
#: and its parts are held in memory while they are sent).
DEFAULT_PART_SIZE = 8 * MiB
#: A file is cut into at most this many parts, while they are not larger than
#: :data:`AUTO_MAX_PART_SIZE`.
AUTO_PARTS = 32
#: The largest automatic part, until 10,000 parts need larger ones.
AUTO_MAX_PART_SIZE = 64 * MiB

FileIdentity = tuple[int, int, int, int, int]
Digests = list[bytes]
_BLOCK = 1 * MiB


def file_identity(st: os.stat_result) -> FileIdentity:
    """What changes when a file is rewritten, appended to or replaced: inode,
    size, mtime and ctime (ns; ctime also moves when mtime is set back)."""
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def choose_part_size(size: int, part_size: int | None = None) -> int:
    """The part size for a ``size``-byte file: ``part_size`` (at least 5 MiB)
    unless 10,000 parts are not enough.

    ``None`` (the default of ``TransferConfig.part_size``) chooses by size:
    :data:`DEFAULT_PART_SIZE`, grown in whole MiB so the file is cut into at
    most :data:`AUTO_PARTS` parts, up to :data:`AUTO_MAX_PART_SIZE`.
    """
    if part_size is None:
        grown = math.ceil(size / AUTO_PARTS / MiB) * MiB
        part_size = min(max(DEFAULT_PART_SIZE, grown), AUTO_MAX_PART_SIZE)
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


def composite_sha256(part_digests: list[bytes]) -> str:
    """``<hex>-<parts>``: S3's composite SHA-256, the SHA-256 of the concatenated part digests."""
    return f"{hashlib.sha256(b''.join(part_digests)).hexdigest()}-{len(part_digests)}"


def file_digests(fd: int, size: int, part_size: int) -> Digests:
    """The SHA-256 digest of each ``part_size`` part of the first ``size`` bytes of ``fd``.

    One read of the file, 1 MiB at a time into one buffer, each byte hashed
    once. Raises :class:`TransferError` when the file is shorter than ``size``.
    """
    buf = bytearray(min(_BLOCK, max(1, size)))
    view = memoryview(buf)
    count = max(1, math.ceil(size / part_size))
    digests: list[bytes] = []
    for number in range(1, count + 1):
        part = hashlib.sha256()
        offset = (number - 1) * part_size
        end = offset + part_length(number, part_size, size)
        while offset < end:
            n = os.preadv(fd, [view[: min(len(buf), end - offset)]], offset)
            if not n:
                raise TransferError("the file shrank while it was being uploaded")
            part.update(view[:n])
            offset += n
        digests.append(part.digest())
    return digests


def path_composite_sha256(path: str | os.PathLike[str], part_size: int) -> str:
    """The composite SHA-256 (:func:`composite_sha256`) of the file at ``path``
    cut in ``part_size`` parts, as a multipart upload of it records."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return composite_sha256(file_digests(fd, os.fstat(fd).st_size, part_size))
    finally:
        os.close(fd)


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
