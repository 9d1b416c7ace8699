"""The download engine: parallel ranged GETs written in place, then checked.

The first ranged GET tells the size and ETag (no HEAD); the
other ranges follow in parallel, each streamed with ``readinto`` into one
reused buffer per thread and written with ``os.pwrite`` at its offset in a temp file
that is renamed into place only when complete and checked. Writes go
through the page cache, as every other S3 tool's do. With
``TransferConfig.direct_io_min_size`` set, downloads that large or larger
write with ``O_DIRECT`` on Linux instead (whole 1 MiB page-aligned buffers
at aligned offsets; the object's odd tail, and everything after a refused
direct write, through the page cache): kernel time that stays the same
whatever the state of the host's memory, but the download waits for the
disk and the file is not left in the page cache. It is off by default
because on the benchmark host it cost wall time (bench/: 100 MiB in
0.36-0.43 s buffered against 0.48-0.66 s with O_DIRECT, same run), and
because it moves the page-cache fill to the first read of the file, which
then pays about what the download saved (docs/benchmark.md, issue 19).

Checks
------
Downloads check that every range delivers exactly its bytes (a broken
connection resumes from the first missing byte), that the total is the
object's size, that later ranges come from the same object
(``If-Match: <etag>``), and, when the ETag is an MD5 (single-part objects
without SSE-KMS/SSE-C), the MD5 of the data: streamed when the object comes
in one GET, read back from the file otherwise. A multipart ETag (``-N``)
is the MD5 of part MD5s whose part sizes are unknown: it is not compared
(logged at debug level with the reason), the size is.
"""

from __future__ import annotations

import builtins
import concurrent.futures as cf
import contextlib
import errno
import functools
import hashlib
import logging
import os
import random
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sts_bridge.errors import InvalidArgumentError, ObjectNotFoundError, TransferError
from sts_bridge.s3.config import TransferConfig
from sts_bridge.s3.errors import storage_unreachable
from sts_bridge.s3.signed_http import BucketTarget, MiB, S3Http, describe_failure, strip_etag
from sts_bridge.s3.transfer_types import Progress, ProgressCallback
from sts_bridge.s3.transport import ConnectionPools, ProtocolError

# The whole engine logs under the name of its public module.
log = logging.getLogger("sts_bridge.s3.transfers")

_READ_BUFFER = 1 * MiB
#: The largest buffered write. On the benchmark VM (Linux 6.18, ext4) 1 GiB
#: written in 1 MiB writes cost 0.3-1.4 s of system time, in 128-512 KiB
#: writes 0.22-0.25 s in every run, and `s5cmd` writes 32 KiB at a time
#: (docs/benchmark.md). The likely reason: the kernel sizes page-cache
#: folios by the write, large folios come from the high-order free blocks a
#: VM hands back to its host (virtio-balloon free page reporting), and the
#: first touch of such memory faults on the host. A 1 MiB read goes out in
#: 4 writes.
PAGE_CACHE_WRITE = 256 * 1024
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


def open_direct(path: Path, size: int, step: int, min_size: int | None) -> int | None:
    """A second, O_DIRECT descriptor on the download's temp file, or ``None``.

    Only for downloads of ``min_size`` bytes or more (``None``: never) on
    Linux whose ranges start on aligned offsets;
    ``None`` where the file system refuses O_DIRECT (tmpfs: EINVAL).
    """
    flag = getattr(os, "O_DIRECT", 0)
    if (
        not flag
        or min_size is None
        or size < min_size
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
    """Write all of ``view`` at ``offset`` through the page cache, in writes of at
    most :data:`PAGE_CACHE_WRITE` bytes."""
    try:
        written = 0
        while written < len(view):
            written += os.pwrite(fd, view[written : written + PAGE_CACHE_WRITE], offset + written)
    except OSError as exc:  # a local problem (disk full...): not worth a retry
        raise TransferError(f"{what}: writing the file failed: {exc}") from exc


def _put_in_place(tmp: Path, target: Path, what: str) -> None:
    """Rename the complete temp file to ``target``; when that fails (``target``
    became a directory meanwhile, a read-only folder...) the temp file goes
    and the error names the destination, not the temp file."""
    try:
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, IsADirectoryError) or target.is_dir():
            raise TransferError(
                f"{what}: {target} became a directory during the download; nothing was written",
                hint="remove or rename that directory, or give a directory to download into",
            ) from exc
        raise TransferError(
            f"{what}: cannot write {target}: {exc.strerror or type(exc).__name__}; "
            "nothing was written",
            hint="check the destination, its folder's permissions and the free space",
        ) from exc


def part_file(target: Path) -> Path:
    """The temp file a download into ``target`` writes before the rename."""
    return target.with_name(f".{target.name}.{os.getpid()}-{random.getrandbits(32):08x}.part")


#: The name of a download's temp file, ``.NAME.PID-XXXXXXXX.part`` (older ones:
#: ``.NAME.PID.part``); group 1 is NAME, group 2 the pid of the process writing it.
PART_FILE_NAME = re.compile(r"\.(.+)\.(\d+)(?:-[0-9a-f]{8})?\.part")
#: What follows ``.NAME.`` in such a name, before ``.part``; group 1 is the pid.
_PART_FILE_TAG = re.compile(r"(\d+)(?:-[0-9a-f]{8})?")


def stale_part_file(name: str) -> bool:
    """Whether ``name`` is a download temp file whose process is gone (kill -9, a crash).

    A temp file of a running download (ours or another process's) is not stale."""
    match = PART_FILE_NAME.fullmatch(name)
    return match is not None and not _alive(int(match.group(2)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def clean_stale_parts(target: Path) -> int:
    """Remove temp files of earlier downloads into ``target`` whose process is gone.

    A killed download (kill -9, power loss) leaves ``.NAME.PID-XXXXXXXX.part``
    next to its destination; the next download to the same destination
    removes those whose process no longer runs (on this machine). Returns
    how many were removed.
    """
    # Compared as strings, not with a pattern made of the name: compiling one
    # per download costs more than the download of a small file.
    head, tail = f".{target.name}.", ".part"
    removed = 0
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        if not (name.startswith(head) and name.endswith(tail)):
            continue
        match = _PART_FILE_TAG.fullmatch(name, len(head), len(name) - len(tail))
        if match is None or _alive(int(match.group(1))):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed += 1
        except OSError as exc:
            log.debug("cannot remove the stale part file %s: %s", entry.path, exc)
    if removed:
        log.info("removed %d stale part file(s) of %s", removed, target)
    return removed


def resolve_target(key: str, dest: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """Where a download of ``key`` into ``dest`` writes, and whether it streams there.

    ``dest``: ``None`` (the key's name here), a directory (the key's name in
    it; also a path ending with ``/``, created), or a file. A symlink is
    followed to its final target, which is what gets written (replaced when
    it is a regular file). A FIFO or a character device (``/dev/stdout``, a
    terminal, ``/dev/null``) is streamed into (``True``), never replaced.
    Raises :class:`TransferError`, before any request, when the destination
    is a directory, a block device or a socket.
    """
    import stat

    name = key.rsplit("/", 1)[-1]
    if dest is not None and os.fspath(dest) in ("", b""):
        # Path("") is ".": an empty argument (an unset shell variable) would
        # quietly write here
        raise InvalidArgumentError(
            f"empty destination for {key!r}",
            hint=f"name a file or a folder, or leave the destination out to write {name!r} here",
        )
    if dest is None:
        target = Path(name)
    else:
        target = Path(os.fspath(dest))
        if target.is_dir() or os.fspath(dest).endswith(("/", os.sep)):
            target = target / name
    try:
        mode: int | None = os.stat(target).st_mode  # through symlinks
    except FileNotFoundError:
        mode = None  # nothing there yet (maybe a dangling symlink: its target is created)
    except OSError as exc:
        raise TransferError(f"cannot download {key!r} to {target}: {exc.strerror}") from exc
    if mode is not None and (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
        # opened by this very path: /dev/stdout -> /proc/self/fd/1 -> "pipe:[...]"
        # has no real path to resolve
        return target, True
    if mode is None or stat.S_ISREG(mode):
        if target.is_symlink():
            target = Path(os.path.realpath(target))
        return target, False
    kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file, FIFO or character device"
    raise TransferError(
        f"cannot download {key!r} to {target}: it is {kind}",
        hint="give a file name (or a directory without an entry of that name) as the destination",
    )


def fd_writer(fd: int, target: object) -> Callable[[memoryview], None]:
    """``write(view)`` writing all of ``view`` to ``fd`` (pipes take it in pieces).

    A closed reader raises ``BrokenPipeError`` as is (``download KEY - | head``
    is no failure); other write errors raise :class:`TransferError`.
    """

    def write(view: memoryview) -> None:
        try:
            while view:
                view = view[os.write(fd, view) :]
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise TransferError(f"writing to {target} failed: {exc.strerror or exc}") from exc

    return write


def _network_error(exc: OSError) -> bool:
    """Whether an OSError while reading a response came from the socket (retry it)."""
    return isinstance(exc, (TimeoutError, ConnectionError)) and not isinstance(exc, BrokenPipeError)


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


class DownloadEngine(S3Http):
    """Downloads over :class:`~sts_bridge.s3.signed_http.S3Http`: ranged GETs, checks, O_DIRECT.

    Of ``config`` it uses the download knobs: ``range_size``,
    ``range_concurrency`` (ranges of one file in flight),
    ``file_concurrency`` (small files at once, in sync) and
    ``direct_io_min_size``.
    """

    def __init__(
        self, ws: BucketTarget, config: TransferConfig, *, pools: ConnectionPools | None = None
    ) -> None:
        super().__init__(
            ws,
            config,
            connections=max(config.range_concurrency, config.file_concurrency),
            pools=pools,
        )
        self.concurrency = config.range_concurrency
        self.small_concurrency = config.file_concurrency
        self.part_size = config.range_size
        self.direct_io_min_size = config.direct_io_min_size

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
        except ObjectNotFoundError as exc:
            raise self._not_found(key) from exc
        size = _total_size(resp)
        etag = strip_etag(resp.headers.get("ETag"))
        md5_hex, reason = _etag_md5(etag, resp.headers)
        tracker = Progress(progress, size)
        tmp = part_file(target)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        direct: builtins.list[int | None] = [None]  # the O_DIRECT descriptor, None once given up
        opened: int | None = None
        ok = False
        try:
            if size:
                os.ftruncate(fd, size)
            step = self.part_size
            direct[0] = opened = open_direct(tmp, size, step, self.direct_io_min_size)
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
                _put_in_place(tmp, target, what)
            else:
                with contextlib.suppress(OSError):
                    tmp.unlink()

    # ---------------------------------------------------------- streaming
    def download_stream(
        self,
        full_key: str,
        key: str,
        write: Callable[[memoryview], None],
        progress: ProgressCallback | None,
    ) -> int:
        """GET ``full_key`` in order, handing every byte once to ``write``; returns the size.

        For destinations that cannot be written at an offset or replaced (a
        pipe, a terminal, a character device, a file object): one ranged GET
        at a time, each later one carrying ``If-Match: <etag>``, a broken
        connection resumed from the first byte not yet written. The checks
        of :meth:`download` (size, MD5 of a single-part ETag) run as the bytes
        pass; since bytes already handed over cannot be taken back, a failed
        check raises after the data was written.
        """
        what = f"downloading {key!r}"
        step = self.part_size
        etag = ""
        size: int | None = None
        md5: Any = None
        md5_hex: str | None = None
        tracker: Progress | None = None
        pos = 0
        failures = 0
        buf = _buffer()
        while size is None or pos < size:
            headers = {"Range": f"bytes={pos}-{pos + step - 1}"}
            if etag:
                headers["If-Match"] = f'"{etag}"'
            try:
                resp = self.call(
                    "GET",
                    full_key,
                    what,
                    headers=headers,
                    ok=frozenset({206, 200, 416}),
                    stream=True,
                )
            except ObjectNotFoundError as exc:
                raise self._not_found(key) from exc
            if resp.status == 416 and size is None:  # an empty object has no byte 0
                resp.release_conn()
                resp = self.call("GET", full_key, what, stream=True)
            if size is None:
                size = _total_size(resp)
                etag = strip_etag(resp.headers.get("ETag"))
                md5_hex, reason = _etag_md5(etag, resp.headers)
                md5 = hashlib.md5(usedforsecurity=False) if md5_hex else None
                if md5_hex is None:
                    log.debug("%s: ETag not compared (%s); size checked", what, reason)
                tracker = Progress(progress, size)
            elif _total_size(resp) != size or _range_start(resp) != pos:
                resp.release_conn()
                raise TransferError(f"{what}: the object changed during the download")
            end = size if resp.status == 200 else min(pos + step, size)
            readinto = resp.readinto
            try:
                while pos < end:
                    n = readinto(buf[: min(len(buf), end - pos)])
                    if not n:
                        raise ProtocolError(f"the answer ended {end - pos} bytes early")
                    view = buf[:n]
                    write(view)
                    if md5 is not None:
                        md5.update(view)
                    pos += n
                    assert tracker is not None
                    tracker.add(n)
            except OSError as exc:
                resp.close()
                resp.release_conn()
                if not _network_error(exc):
                    raise  # the destination failed (a closed pipe...): not worth a retry
                failures += 1
                if not self.retry.may_retry(failures):
                    reason = describe_failure(exc, self.stall)
                    raise storage_unreachable(
                        what, f"{reason} (after {self.retry.attempts} attempts)"
                    ) from exc
                log.debug("%s: broke at byte %d (%s); resuming", what, pos, exc)
                continue
            resp.release_conn()
        if md5 is not None and md5.hexdigest() != md5_hex:
            raise TransferError(
                f"{what}: the data does not match the object's ETag (MD5)",
                hint="try again; the object may have changed or been corrupted",
            )
        return size

    def _not_found(self, key: str) -> ObjectNotFoundError:
        return ObjectNotFoundError(
            f"no object {key!r} in workspace {getattr(self.ws, 'name', '')!r}".replace(" ''", ""),
            status=404,
            code="NoSuchKey",
            key=key,
        )

    def _fetch_range(
        self,
        fd: int,
        full_key: str,
        what: str,
        etag: str,
        size: int,
        tracker: Progress,
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
            readinto = resp.readinto
            try:
                while pos < end:
                    want = min(len(buf), end - pos)
                    n = readinto(buf[fill:want])
                    if not n:
                        raise ProtocolError(f"the answer ended {end - pos - fill} bytes early")
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
            except OSError as exc:
                fill = 0  # read but not written: asked for again from pos
                resp.close()
                resp.release_conn()
                resp = None
                failures += 1
                if not self.retry.may_retry(failures):
                    reason = describe_failure(exc, self.stall)
                    raise storage_unreachable(
                        what, f"{reason} (after {self.retry.attempts} attempts)"
                    ) from exc
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
