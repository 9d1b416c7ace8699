"""Private files: atomic 0600 writes, cross-process locks, JSON reads.

Token and credential caches are shared by every process of a user; a reader
must never see half a file, and two writers must not interleave. Hence a temp
file in the same directory (so ``os.replace`` is atomic), fsync of the file
and of the directory (so a crash does not leave an empty file behind), and a
``filelock`` lock file next to the data for read-modify-write sequences.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger("sts_bridge")

__all__ = [
    "NotRegularFileError",
    "atomic_write",
    "file_lock",
    "private_directory",
    "read_private_json",
    "read_regular_file",
]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def private_directory(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` (and missing parents) 0700; tighten it and its parent.

    Every cache file lives in ``<cache dir>/<kind>/`` (``tokens``, ``sts``,
    ``uploads``), so the file's directory and the one above it are the
    cache's own: both end up 0700 when they belong to this user, even if an
    older version or a permissive umask made them 0755. Directories above
    the cache dir (``~/.cache``) are never touched.
    """
    target = Path(directory)
    missing = []
    probe = target
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
    for folder in (target, target.parent):
        _tighten(folder, 0o700, "directory")
    return target


def _tighten(path: Path, mode: int, what: str) -> None:
    try:
        stat = path.stat()
    except OSError:
        return
    if hasattr(os, "getuid") and stat.st_uid != os.getuid():
        return
    current = stat.st_mode & 0o777
    if current & ~mode & 0o077:
        with contextlib.suppress(OSError):
            os.chmod(path, current & mode)
            logger.warning(
                "%s %s was readable by others (mode %04o): tightened to %04o",
                what,
                path,
                current,
                current & mode,
            )


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically, the file ending with ``mode``.

    The parent directory is created (0700) when missing, and tightened (see
    :func:`private_directory`). The temp file is created with mode 0600
    from the start (``mkstemp``), so the content is never readable by
    others, not even for a moment.
    """
    target = Path(path)
    private_directory(target.parent)
    import tempfile  # only when writing: about 4 ms of a command's start-up

    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


class LockTimeout(TimeoutError):
    """A :func:`file_lock` was not obtained in time (another process holds it)."""


#: Seconds between two attempts to take a lock another process holds.
_LOCK_POLL = 0.05


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], timeout: float = 60.0) -> Iterator[None]:
    """Hold an exclusive cross-process lock on ``path`` (a ``.lock`` file, 0600).

    ``flock(2)`` where there is one (no import: the ``filelock`` package costs
    about 70 ms to import, more than a warm ``sts-bridge`` command's work),
    else ``filelock``. Raises :class:`LockTimeout` when the lock is not
    obtained within ``timeout`` seconds (``0``: one attempt).
    """
    lock_path = Path(path)
    private_directory(lock_path.parent)
    try:
        import fcntl
    except ImportError:  # not POSIX
        with _filelock(lock_path, timeout):
            yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"{lock_path} is held by another process") from None
                time.sleep(_LOCK_POLL)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _filelock(lock_path: Path, timeout: float) -> Iterator[None]:
    import filelock

    lock = filelock.FileLock(str(lock_path), timeout=timeout, mode=0o600)
    try:
        lock.acquire()
    except filelock.Timeout as exc:
        raise LockTimeout(f"{lock_path} is held by another process") from exc
    try:
        yield
    finally:
        lock.release()


class NotRegularFileError(OSError):
    """A file that should hold data is a FIFO, a socket, a device or a directory."""


def read_regular_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the regular file ``path``; :class:`NotRegularFileError` for anything else.

    Opened with ``O_NONBLOCK`` and checked with ``fstat`` before the first
    read: a FIFO put in place of a cache or configuration file would block an
    ordinary ``open`` until a writer comes, which is forever.
    """
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(0, "not a regular file", os.fspath(path))
        os.set_blocking(fd, True)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_private_json(path: str | os.PathLike[str]) -> Any:
    """Return the parsed JSON in ``path``, or ``None`` when the file does not exist.

    Raises ``ValueError`` when the content is not JSON and ``OSError`` when the
    file cannot be read (:class:`NotRegularFileError`: not a regular file).
    """
    try:
        raw = read_regular_file(path)
    except FileNotFoundError:
        return None
    return json.loads(raw.decode("utf-8"))


def read_cache_document(
    path: Path, *, format: str, version: int, key: Any, what: str, foreign: str
) -> dict[str, Any] | None:
    """The JSON document of a private cache file, or ``None`` (with a warning).

    A missing file, a file of another user, unreadable or corrupt content and
    a document written for another ``key``/``format``/``version`` all give
    ``None``: a cache is never worth a crash, and the file is replaced on the
    next write. ``what`` names the cache in warnings ("token cache"),
    ``foreign`` says what another key means ("another client or version").
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("ignoring %s %s: %s", what, path, exc.strerror)
        return None
    if hasattr(os, "getuid") and stat.st_uid != os.getuid():
        logger.warning("ignoring %s %s: owned by another user", what, path)
        return None
    try:
        data = read_private_json(path)
    except NotRegularFileError:
        # a FIFO would block the read forever; the next write replaces it
        logger.warning("ignoring %s %s: not a regular file (it will be replaced)", what, path)
        return None
    except (OSError, ValueError, UnicodeDecodeError):
        logger.warning("ignoring corrupt %s %s (it will be replaced)", what, path)
        return None
    # A cache readable by others (copied around, restored from a backup,
    # written by a tool with a loose umask) is repaired rather than refused:
    # refusing would only make the user log in again into a 0600 file.
    _tighten(path, 0o600, what)
    _tighten(path.parent, 0o700, "directory")
    if data is None:
        return None
    if (
        not isinstance(data, dict)
        or data.get("format") != format
        or data.get("version") != version
        or data.get("key") != key
    ):
        logger.warning("ignoring %s %s: written for %s", what, path, foreign)
        return None
    return data
