"""The resident helper: ``sts-bridge`` data commands without Python's start-up.

A ``sts-bridge`` command spends about 0.2 s starting Python and importing
the engine before it moves a byte; s5cmd moves 100 MiB in that time. With
``STS_BRIDGE_RESIDENT`` set (``1``: idle timeout of 10 minutes, or the
idle seconds), the first data command starts a helper process that imports
the CLI once and waits on a Unix socket. Later commands hand it their
arguments, working directory, environment, umask and stdin / stdout /
stderr (``SCM_RIGHTS``); the helper forks a worker that runs the command
as this process would have, while this process forwards Ctrl-C, SIGTERM and
SIGHUP to the worker and exits with its status. A worker whose caller dies
is sent SIGTERM, and unwinds as after Ctrl-C.

What the helper holds: imported modules, nothing else. It starts with a
minimal environment (no ``TERRAPI_*`` setting, no secret); each worker gets
its caller's. Its socket lives in a 0700 directory (``STS_BRIDGE_CACHE_DIR``
or ``$XDG_RUNTIME_DIR`` or the user's cache directory) and it serves its own
user only (``SO_PEERCRED``). It exits after its idle timeout. Another
installation (version, interpreter, or edited sources) has another socket
name, so a helper never runs code other than the caller's.

Served: the data commands (:data:`SERVED`). ``login``, ``token``,
``credentials --serve``, ``devstack`` and the rest always run in the
calling process, as does everything when the helper cannot be reached.
Linux only. This module is imported by every command: the caller's side
imports only what it needs to forward.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

from sts_bridge._user_dirs import APP_NAME, cache_dir
from sts_bridge._version import VERSION
from sts_bridge.cli._argv import command_in

__all__ = ["ENV", "SERVED", "forward", "idle_seconds", "main", "serve", "socket_path"]

ENV = "STS_BRIDGE_RESIDENT"
DEFAULT_IDLE = 600.0
#: The commands a helper runs; the others always run in the calling process.
SERVED = frozenset({"upload", "download", "ls", "rm", "presign", "sync", "workspace", "workspaces"})
#: What the helper's own environment keeps of its starter's (no settings, no secrets).
_HELPER_ENV = ("PATH", "HOME", "LANG", "TMPDIR", "VIRTUAL_ENV")
_HELPER_ENV_PREFIXES = ("LC_", "PYTHON", "XDG_")
#: Socket paths longer than this are reached through ``/proc/self/fd`` (``sockaddr_un``).
_MAX_SOCKET_PATH = 100
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: The helper's command: ``-m`` or ``-c`` would put the caller's folder first
#: on ``sys.path``, where a checkout's own ``sts_bridge/`` would be imported
#: instead of the installation the caller runs (``-c`` puts it as ``""``).
_HELPER_CODE = (
    "import sys; sys.path[:1] = [p for p in sys.path[:1] if p]; "
    "from sts_bridge.cli.resident import main; main()"
)


# ------------------------------------------------------------ the caller's side
def idle_seconds(value: str | None) -> float | None:
    """The idle timeout ``STS_BRIDGE_RESIDENT=value`` asks for; ``None``: off."""
    text = (value or "").strip().lower()
    if text in ("", "0", "off", "false", "no"):
        return None
    if text in ("1", "on", "true", "yes"):
        return DEFAULT_IDLE
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        print(
            f"sts-bridge: note: ignoring {ENV}={value!r}: give 1 (on) or the idle seconds",
            file=sys.stderr,
        )
        return None
    return seconds


def socket_path() -> str:
    """The helper's socket for this installation."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and not os.environ.get("STS_BRIDGE_CACHE_DIR"):
        folder = os.path.join(runtime, APP_NAME)
    else:
        folder = os.path.join(cache_dir(), "resident")
    return os.path.join(os.path.abspath(folder), f"{fingerprint()}.sock")


def fingerprint(root: str | None = None) -> str:
    """The installation's name: version, interpreter, package folder and sources' mtimes."""
    import zlib

    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    newest, count = 0, 0
    folders = [root]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                    folders.append(entry.path)
                elif entry.name.endswith(".py"):
                    newest = max(newest, entry.stat().st_mtime_ns)
                    count += 1
    where = f"{sys.executable}\0{sys.version}\0{root}\0{newest}\0{count}".encode()
    return f"{VERSION}-{zlib.crc32(where):08x}"


@contextlib.contextmanager
def _address(path: str) -> Iterator[str]:
    """An address for ``path`` that fits in ``sockaddr_un`` (108 bytes): the path
    itself, or the same file reached through ``/proc/self/fd`` and its folder."""
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        yield path
        return
    folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{folder}/{os.path.basename(path)}"
    finally:
        os.close(folder)


def forward(argv: list[str]) -> int | None:
    """Run ``argv`` in the resident helper and return its exit status, or
    ``None`` when this process must run it (off, not served, or no helper:
    then one is started for the next command)."""
    idle = idle_seconds(os.environ.get(ENV))
    if idle is None or not sys.platform.startswith("linux") or command_in(argv) not in SERVED:
        return None
    path = socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            with _address(path) as address:
                sock.connect(address)
        except OSError:
            _start_helper(path, idle)
            return None
        if _peer_uid(sock) != os.getuid():
            return None  # never hand a command (and its environment) to another user
        return _run_in_helper(sock, argv)
    finally:
        sock.close()


def _peer_uid(sock: socket.socket) -> int:
    import struct

    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    uid: int = struct.unpack("3i", creds)[1]
    return uid


def _run_in_helper(sock: socket.socket, argv: list[str]) -> int | None:
    sigint_ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    # Signals wait until the worker's pid is known, then go to the worker.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    try:
        try:
            reader = _hand_over(sock, argv, sigint_ignored)
            started = reader.readline()
        except OSError:
            return None  # a closed stdio descriptor, a helper going away: run it here
        if not started:
            return None  # the helper closed without starting the command: run it here
        worker = _number(started, b"pid ")
        if worker is not None:
            for sig in _FORWARDED:
                if not (sig == signal.SIGINT and sigint_ignored):
                    signal.signal(sig, lambda signum, frame: _signal(worker, signum))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    try:
        status = _number(reader.readline(), b"exit ") if worker is not None else None
    except OSError:
        status = None
    if status is not None:
        return status
    # Started (or perhaps started): never run the command a second time here.
    print(
        "sts-bridge: error: the resident helper's worker ended without an exit status",
        file=sys.stderr,
    )
    print(f"sts-bridge: hint: run the command again, or unset {ENV}", file=sys.stderr)
    return 1


def _hand_over(sock: socket.socket, argv: list[str], sigint_ignored: bool) -> Any:
    """Send the command, its folder, environment, umask and stdio; the answer's reader."""
    umask = os.umask(0o077)
    os.umask(umask)
    request = {
        "argv": argv,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "umask": umask,
        "sigint_ignored": sigint_ignored,
    }
    payload = json.dumps(request).encode()
    socket.send_fds(sock, [len(payload).to_bytes(4, "big")], [0, 1, 2])
    sock.sendall(payload)
    return sock.makefile("rb")


def _number(line: bytes, tag: bytes) -> int | None:
    """N of a ``<tag>N`` line, ``None`` for anything else."""
    if not (line.startswith(tag) and line.endswith(b"\n")):
        return None
    try:
        return int(line[len(tag) :])
    except ValueError:
        return None


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _start_helper(path: str, idle: float) -> None:
    """Start the helper in its own session, detached, with a minimal environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k in _HELPER_ENV or k.startswith(_HELPER_ENV_PREFIXES)
    }
    argv = [sys.executable, "-c", _HELPER_CODE, path, repr(idle)]
    devnull = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    with contextlib.suppress(OSError):  # the command runs here all the same
        os.posix_spawn(sys.executable, argv, env, file_actions=devnull, setsid=True)


# ------------------------------------------------------------ the helper
def serve(path: str, idle: float) -> None:
    """Be the helper on ``path`` until ``idle`` seconds pass without a command."""
    import fcntl
    import select
    import time

    from sts_bridge._files import private_directory

    if os.path.basename(path) != f"{fingerprint()}.sock":
        return  # started for another installation: never run other code
    private_directory(os.path.dirname(path))
    # Not _files.file_lock: each forked worker closes its copy of this descriptor,
    # so a helper that is killed frees the lock even while workers still run.
    lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return  # another helper serves this installation
    os.ftruncate(lock, 0)
    os.write(lock, b"%d\n" % os.getpid())  # who to stop: kill $(cat <socket>.lock)
    _preload()
    import gc

    gc.freeze()  # the workers' collections skip what the helper imported: fewer copied pages
    listener = _listen(path)
    workers: set[int] = set()
    last = time.monotonic()
    try:
        while True:
            wait = 1.0 if workers else max(0.0, last + idle - time.monotonic())
            ready, _, _ = select.select([listener], [], [], wait)
            _reap(workers)
            if ready:
                conn, _ = listener.accept()
                last = time.monotonic()
                pid = _dispatch(conn, listener, lock)
                if pid:
                    workers.add(pid)
            elif not workers and time.monotonic() - last >= idle:
                return
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(lock)


def _preload() -> None:
    """Import what the served commands use, once: the point of the helper."""
    import importlib

    from sts_bridge.cli._app import build_parser

    for command in SERVED:
        build_parser(command)  # imports the command's module; the parser is kept
    for name in ("sts_bridge.client", "sts_bridge.auth.factory", "sts_bridge.s3.sync"):
        importlib.import_module(name)


def _listen(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a dead helper's socket: the lock says none is alive
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o077)
    try:
        with _address(path) as address:
            listener.bind(address)
    finally:
        os.umask(umask)
    listener.listen(64)
    return listener


def _reap(workers: set[int]) -> None:
    for pid in list(workers):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            workers.discard(pid)


def _dispatch(conn: socket.socket, listener: socket.socket, lock: int) -> int | None:
    """Read one request and fork its worker; the worker's pid, or ``None``."""
    fds: list[int] = []
    try:
        if _peer_uid(conn) != os.getuid():
            return None  # another user: never
        conn.settimeout(10)
        head, fds, _, _ = socket.recv_fds(conn, 4, 3)
        while len(head) < 4 and (more := conn.recv(4 - len(head))):
            head += more
        size = int.from_bytes(head, "big")
        payload = b""
        while len(payload) < size and (more := conn.recv(size - len(payload))):
            payload += more
        request = json.loads(payload)
        if len(fds) != 3 or not isinstance(request, dict):
            return None
        conn.settimeout(None)
        pid = os.fork()
        if pid == 0:
            listener.close()
            os.close(lock)
            _work(conn, fds, request)
        return pid
    except (OSError, ValueError):
        return None
    finally:
        for fd in fds:
            os.close(fd)
        conn.close()


def _work(conn: socket.socket, fds: list[int], request: dict[str, Any]) -> NoReturn:
    """In the forked worker: become the caller's process, run the command, report."""
    import threading

    status = 1
    done = threading.Event()
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        signal.signal(
            signal.SIGINT,
            signal.SIG_IGN if request.get("sigint_ignored") else signal.default_int_handler,
        )
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.umask(int(request["umask"]))
        argv = [str(a) for a in request["argv"]]
        sys.argv = ["sts-bridge", *argv]
        _reopen_stdio()
        conn.sendall(b"pid %d\n" % os.getpid())
        threading.Thread(target=_watch_caller, args=(conn, done), daemon=True).start()
        if "--debug" in argv:
            print(
                "sts-bridge: DEBUG: sts_bridge.cli.resident: run by the resident helper "
                f"(pid {os.getppid()})",
                file=sys.stderr,
            )
        from sts_bridge.cli._app import main

        status = int(main(argv))
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        status = 1
    finally:
        done.set()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        with contextlib.suppress(OSError):
            conn.sendall(b"exit %d\n" % status)
        os._exit(status)


def _watch_caller(conn: socket.socket, done: Any) -> None:
    """The caller never writes again: end of file means it died. Unwind as after SIGTERM."""
    with contextlib.suppress(OSError):
        conn.recv(1)
    if not done.is_set():
        os.kill(os.getpid(), signal.SIGTERM)


def _reopen_stdio() -> None:
    """Text streams over the caller's descriptors, laid out as Python lays out its own
    (``sys.__stdout__`` and the others already read descriptors 0, 1 and 2)."""
    import io

    encoding = sys.stdout.encoding
    errors = "strict"
    configured = os.environ.get("PYTHONIOENCODING", "")
    if configured:
        name, _, handler = configured.partition(":")
        encoding, errors = name or encoding, handler or errors

    def text(fd: int, errors: str, line_buffering: bool) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
        buffered = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        return io.TextIOWrapper(
            buffered, encoding=encoding, errors=errors, line_buffering=line_buffering
        )

    sys.stdin = text(0, errors, False)
    sys.stdout = text(1, errors, os.isatty(1))
    sys.stderr = text(2, "backslashreplace", True)


def main() -> None:
    """The helper process: ``python -c _HELPER_CODE SOCKET_PATH IDLE_SECONDS``."""
    os.chdir("/")  # hold no caller's folder busy
    serve(sys.argv[1], float(sys.argv[2]))
