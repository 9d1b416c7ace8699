"""The fault suite: the CLI against the local platform behind fault proxies.

For every fault the outcome is either success with byte-identical data or a
one-line error within a stated bound, and afterwards: no object lost,
corrupted, mixed or outside the prefix, no multipart upload left once the
same command ran again, no stray local file. The stall timeout is
``STS_BRIDGE_STALL_TIMEOUT=2`` (conftest.STALL) so that stalls resolve in
seconds. Bounds are generous (the machine is shared); they are not timings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from faults_support import (
    PREFIX,
    STALL,
    Checker,
    MiB,
    Proxied,
    one_line_error,
    pattern_file,
    run_cli,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.requires_radosgw("multipart uploads, ListMultipartUploads and STS expiry"),
]

#: a request to a dead store: 4 attempts of STALL s, backoff (at most 1.5+3+6 s)
STALL_BOUND = 4 * STALL + 11 + 25  # + CLI start and the API round trips (loaded machine)
# Timings are reported (printed), never asserted: the "stalled" wording proves
# the stall detector answered, and this guard only stops a hang (without the
# detector a dead store holds a request for the 300 s read timeout x 4).
HANG_GUARD = 3 * STALL_BOUND


def _env(faults: Proxied) -> dict[str, str]:
    return faults.env_for_test  # type: ignore[attr-defined,no-any-return]


def _assert_clean(checker: Checker, expected: dict[str, bytes]) -> None:
    assert checker.objects() == {k: len(v) for k, v in expected.items()}
    for key, data in expected.items():
        assert checker.data(key) == data
    assert checker.uploads() == []
    assert checker.outside() == []


def _strays(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def _wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the fault never happened")
        time.sleep(0.05)


# --------------------------------------------------------------------------
# transient faults of the store: the transfer succeeds
# --------------------------------------------------------------------------
#: faults of successive connections (the first ones carry parts or ranges)
TRANSIENT: dict[str, list[dict[str, Any]]] = {
    # 512 KiB: every part and range is longer, a CreateMultipartUpload shorter
    "reset mid-part": [{"mode": "reset", "after": 512 * 1024}] * 2,
    "stall mid-part": [{"mode": "stall", "after": 512 * 1024}],
    "503 SlowDown + 500": [{"mode": "slowdown"}] * 2 + [{"mode": "http500"}],
    "trickle": [{"mode": "trickle", "rate": 4 * MiB}] * 8,
}
UPLOAD_FAULTS = ["reset mid-part", "stall mid-part", "503 SlowDown + 500"]
DOWNLOAD_FAULTS = ["reset mid-part", "stall mid-part", "trickle"]


@pytest.mark.parametrize("fault", UPLOAD_FAULTS)
def test_upload_survives_transient_store_faults(
    faults: Proxied, checker: Checker, tmp_path: Path, fault: str
) -> None:
    data = pattern_file(tmp_path / "big.bin", 17 * MiB, seed=1)  # parts of 8, 8, 1 MiB
    faults.s3.set_sequence(*TRANSIENT[fault])
    result, seconds = run_cli(
        ["upload", str(tmp_path / "big.bin"), "--to", checker.base], _env(faults)
    )
    assert result.returncode == 0, result.stderr.decode()
    assert faults.s3.hits >= 1
    _assert_clean(checker, {checker.base + "big.bin": data})
    print(f"FAULT upload {fault}: success in {seconds:.1f} s")


@pytest.mark.parametrize("fault", DOWNLOAD_FAULTS)
def test_download_survives_transient_store_faults(
    faults: Proxied, checker: Checker, tmp_path: Path, fault: str
) -> None:
    data = pattern_file(tmp_path / "src.bin", 17 * MiB, seed=2)  # ranges of 16 and 1 MiB
    key = checker.base + "obj.bin"
    checker.put(key, data)
    faults.s3.set_sequence(*TRANSIENT[fault])
    out = tmp_path / "out"
    out.mkdir()
    result, seconds = run_cli(["download", key, str(out / "obj.bin")], _env(faults))
    assert result.returncode == 0, result.stderr.decode()
    assert (out / "obj.bin").read_bytes() == data
    assert _strays(out) == []
    _assert_clean(checker, {key: data})
    print(f"FAULT download {fault}: success in {seconds:.1f} s")


def test_store_down_for_seconds_mid_upload(
    faults: Proxied, checker: Checker, tmp_path: Path
) -> None:
    """radosgw 'restarting': every connection refused for 3 s, then back."""
    data = pattern_file(tmp_path / "big.bin", 17 * MiB, seed=3)
    faults.s3.set("stall", after=512 * 1024)  # hold the upload mid-part ...
    proc = subprocess.Popen(
        [sys.executable, "-m", "sts_bridge", "upload", str(tmp_path / "big.bin"), "--to",
         checker.base],
        env=_env(faults), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for(lambda: faults.s3.hits >= 1)
        faults.s3.set("down")  # ... then the store goes away
        faults.s3.release_stalled()
        time.sleep(3)
        faults.s3.heal()
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    _assert_clean(checker, {checker.base + "big.bin": data})


# --------------------------------------------------------------------------
# persistent faults: a one-line error within a bound, then a clean re-run
# --------------------------------------------------------------------------
def test_dead_store_upload_fails_in_bound_then_rerun_is_clean(
    faults: Proxied, checker: Checker, tmp_path: Path
) -> None:
    data = pattern_file(tmp_path / "big.bin", 17 * MiB, seed=4)
    faults.s3.set("stall", after=512 * 1024)  # every part stalls; small requests pass
    args = ["upload", str(tmp_path / "big.bin"), "--to", checker.base]
    result, seconds = run_cli(args, _env(faults), timeout=HANG_GUARD)
    line = one_line_error(result)
    assert result.returncode == 8, line  # StorageUnavailableError
    assert "stalled" in line and "storage" in line, line
    assert "API" not in line
    faults.s3.heal()
    again, _ = run_cli(args, _env(faults))
    assert again.returncode == 0, again.stderr.decode()
    _assert_clean(checker, {checker.base + "big.bin": data})
    print(f"FAULT upload dead store: error in {seconds:.1f} s: {line}")


def test_dead_store_download_fails_in_bound_and_leaves_nothing(
    faults: Proxied, checker: Checker, tmp_path: Path
) -> None:
    data = pattern_file(tmp_path / "src.bin", 17 * MiB, seed=5)
    key = checker.base + "obj.bin"
    checker.put(key, data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "obj.bin").write_bytes(b"previous")
    faults.s3.set("stall", after=512 * 1024)
    result, seconds = run_cli(
        ["download", key, str(out / "obj.bin")], _env(faults), timeout=HANG_GUARD
    )
    line = one_line_error(result)
    assert "stalled" in line, line
    assert (out / "obj.bin").read_bytes() == b"previous"
    assert _strays(out) == []
    _assert_clean(checker, {key: data})
    print(f"FAULT download dead store: error in {seconds:.1f} s: {line}")


def test_dead_store_ls_fails_in_bound(faults: Proxied, checker: Checker) -> None:
    """``ls`` goes through botocore: the same stall timeout, 4 attempts."""
    faults.s3.set("stall")
    result, seconds = run_cli(["ls", checker.base], _env(faults), timeout=HANG_GUARD)
    line = one_line_error(result)
    assert result.returncode == 8, line  # StorageUnavailableError
    assert "storage endpoint did not answer" in line, line
    print(f"FAULT ls dead store: error in {seconds:.1f} s: {line}")


def test_api_down_is_one_line_error(faults: Proxied, checker: Checker) -> None:
    faults.api.set("down")
    result, seconds = run_cli(["ls", checker.base], _env(faults), timeout=HANG_GUARD)
    line = one_line_error(result)
    assert result.returncode == 7, line
    print(f"FAULT API down: exit 7 in {seconds:.1f} s: {line}")


# --------------------------------------------------------------------------
# the process dies mid-transfer
# --------------------------------------------------------------------------
def _as_from_a_terminal() -> None:
    # A job started in the background by a non-interactive shell (nohup, `&`, some
    # CI runners) inherits SIGINT ignored, and Python then installs no Ctrl-C
    # handler; the CLI runs here as it does in a user's terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_upload(faults: Proxied, checker: Checker, source: str, **kw: Any) -> Any:
    to = checker.base + ("stdin.bin" if source == "-" else "")
    return subprocess.Popen(
        [sys.executable, "-m", "sts_bridge", "upload", source, "--to", to],
        env=_env(faults),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_as_from_a_terminal,
        **kw,
    )


def _start_stdin_upload(faults: Proxied, checker: Checker) -> Any:
    """``upload -`` with three parts (24 MiB) written to its stdin, which stays
    open: an end of file would complete the upload, so only a signal or a kill
    ends it."""
    proc = _start_upload(faults, checker, "-", stdin=subprocess.PIPE)
    try:
        proc.stdin.write(b"x" * (24 * MiB))
        proc.stdin.flush()
    except BaseException:
        proc.kill()
        raise
    return proc


@pytest.mark.parametrize("how", ["kill -9 then touch", "SIGTERM"])
def test_killed_upload_rerun_adopts_and_leaves_nothing(
    faults: Proxied, checker: Checker, tmp_path: Path, how: str
) -> None:
    src = tmp_path / "big.bin"
    data = pattern_file(src, 17 * MiB, seed=6)
    faults.s3.set("stall", after=512 * 1024)  # hold the parts so the kill lands mid-upload
    proc = _start_upload(faults, checker, str(src))
    try:
        _wait_for(lambda: faults.s3.hits >= 1)
        proc.send_signal(signal.SIGKILL if how.startswith("kill") else signal.SIGTERM)
        faults.s3.heal()  # the parts in flight may finish while the process unwinds
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    if how == "SIGTERM":
        assert proc.returncode == 143, err.decode()
        assert err.decode().splitlines()[-2].startswith("sts-bridge: error: terminated")
    else:
        assert proc.returncode == -signal.SIGKILL
        os.utime(src)  # a new mtime: the earlier upload must still be found
    assert len(checker.uploads()) == 1  # resumable, until the same command runs again
    again, _ = run_cli(["upload", str(src), "--to", checker.base], _env(faults))
    assert again.returncode == 0, again.stderr.decode()
    _assert_clean(checker, {checker.base + "big.bin": data})
    assert not list((tmp_path / "cache" / "uploads").glob("*.json"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_interrupted_stdin_upload_aborts_its_parts(
    faults: Proxied, checker: Checker, sig: int
) -> None:
    returncode, err = _interrupt_stdin_upload(faults, checker, sig)
    assert returncode == (143 if sig == signal.SIGTERM else 130), err.decode()
    assert "Traceback" not in err.decode()
    _assert_clean(checker, {})


def _interrupt_stdin_upload(faults: Proxied, checker: Checker, sig: int) -> tuple[int, bytes]:
    """``upload -`` with three parts in flight, then ``sig`` to the command; its exit
    status and stderr."""
    proc = _start_stdin_upload(faults, checker)
    try:
        _wait_for(lambda: len(checker.uploads()) == 1)
        time.sleep(0.5)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, err


def test_upload_left_by_kill_9_of_a_stdin_upload_is_listed_and_aborted(
    faults: Proxied, checker: Checker, tmp_path: Path
) -> None:
    """``cat big | sts-bridge upload - --to k``, ``kill -9``: the multipart upload
    was recorded before its first part; ``sts-bridge uploads`` finds it with
    the workspace credentials alone and ``--abort`` removes it from the store."""
    import json
    import stat

    records = tmp_path / "cache" / "uploads"
    proc = _start_stdin_upload(faults, checker)
    try:
        _wait_for(lambda: len(checker.uploads()) == 1 and any(records.glob("*.json")))
        proc.kill()
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert len(checker.uploads()) == 1  # orphaned on the store
    (record,) = records.glob("*.json")
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert stat.S_IMODE(records.stat().st_mode) == 0o700
    text = record.read_text()
    (creds,) = [
        doc["credentials"]
        for doc in (json.loads(p.read_text()) for p in (tmp_path / "cache" / "sts").glob("*.json"))
        if doc.get("credentials")
    ]
    for secret in (creds["secret_key"], creds["token"], creds["access_key"]):
        assert secret not in text

    env = _env(faults)
    listed, _ = run_cli(["uploads", checker.base, "--json"], env)
    assert listed.returncode == 0, listed.stderr.decode()
    (upload,) = json.loads(listed.stdout)
    assert upload["key"] == checker.base + "stdin.bin"
    assert upload["source"] is None and upload["running"] is False
    assert upload["upload_id"] == json.loads(text)["upload_id"]
    plain, _ = run_cli(["uploads"], env)
    assert plain.returncode == 0 and checker.base + "stdin.bin" in plain.stdout.decode()
    assert "uploads --abort" in plain.stderr.decode()

    aborted, _ = run_cli(["uploads", "--abort"], env)
    assert aborted.returncode == 0, aborted.stderr.decode()
    assert f"aborted {checker.base}stdin.bin" in aborted.stdout.decode()
    assert checker.uploads() == []  # gone from the store (admin listing)
    assert list(records.glob("*.json")) == []
    after, _ = run_cli(["uploads", "--json"], env)
    assert after.returncode == 0 and json.loads(after.stdout) == []
    _assert_clean(checker, {})


#: Writes argv[1] (a key) through ``workspace://`` in 5 MiB parts: argv[2]
#: "complete" writes 6 MiB and closes; "hold" sends one part and waits on stdin.
_FS_WRITER = """
import sys, fsspec, sts_bridge
name = sts_bridge.Client.from_env().workspace().name
url = f"workspace://{name}/{sys.argv[1]}"
f = fsspec.open(url, "wb", s3_options={"default_block_size": 5 * 2**20}).open()
f.write(b"x" * (6 * 2**20))  # a full block: CreateMultipartUpload and part 1
if sys.argv[2] == "hold":
    sys.stdin.read()
f.close()
"""


def test_upload_left_by_kill_9_of_a_workspace_file_is_listed_and_aborted(
    faults: Proxied, checker: Checker, tmp_path: Path
) -> None:
    """A file written through ``fsspec.open("workspace://...", "wb")``: its
    multipart upload is recorded before its first part, so after ``kill -9``
    ``sts-bridge uploads`` lists it and ``--abort`` removes it from the store;
    a file closed normally leaves no record."""

    env = _env(faults)
    records = tmp_path / "cache" / "uploads"
    done = subprocess.run(
        [sys.executable, "-c", _FS_WRITER, checker.base + "whole.bin", "complete"],
        env=env, capture_output=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert list(records.glob("*.json")) == []
    assert checker.uploads() == []
    assert checker.objects() == {checker.base + "whole.bin": 6 * MiB}

    proc = subprocess.Popen(
        [sys.executable, "-c", _FS_WRITER, checker.base + "fs.bin", "hold"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _kill_9_once_recorded(proc, checker, records, 90)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    _list_and_abort_the_orphan(checker, records, env, "fs.bin")
    _assert_clean(checker, {checker.base + "whole.bin": b"x" * (6 * MiB)})


def _kill_9_once_recorded(
    proc: subprocess.Popen[bytes], checker: Checker, records: Path, guard: float
) -> None:
    """SIGKILL ``proc`` once its multipart upload exists on the store and in
    ``records`` (the events); it must still be running then."""
    _wait_for(
        lambda: (
            proc.poll() is not None or (len(checker.uploads()) == 1 and any(records.glob("*.json")))
        ),
        guard,
    )
    assert proc.poll() is None, proc.communicate(timeout=60)[1].decode()
    proc.kill()
    proc.wait(timeout=60)


def _list_and_abort_the_orphan(
    checker: Checker, records: Path, env: dict[str, str], name: str
) -> dict[str, Any]:
    """The upload of ``checker.base + name`` left by a kill: orphaned on the store,
    listed by ``sts-bridge uploads --json`` with its recorded id, then removed
    from the store and the records by ``--abort``. Returns the listed entry."""
    import json

    assert checker.uploads() == [PREFIX + checker.base + name]  # orphaned on the store
    (record,) = records.glob("*.json")

    listed, _ = run_cli(["uploads", checker.base, "--json"], env)
    assert listed.returncode == 0, listed.stderr.decode()
    (upload,) = json.loads(listed.stdout)
    assert upload["key"] == checker.base + name
    assert upload["running"] is False  # killed before or after part 1 was stored
    assert upload["upload_id"] == json.loads(record.read_text())["upload_id"]

    aborted, _ = run_cli(["uploads", "--abort"], env)
    assert aborted.returncode == 0, aborted.stderr.decode()
    assert f"aborted {checker.base}{name}" in aborted.stdout.decode()
    assert checker.uploads() == []  # gone from the store (admin listing)
    assert list(records.glob("*.json")) == []
    return upload


#: ``fs.<argv[1]>`` of the local file argv[3] to the key argv[2] through
#: ``workspace://``: ``put_file`` of the file, or ``pipe_file`` of its bytes.
_FS_PUTTER = """
import sys, fsspec, sts_bridge
call, key, local = sys.argv[1:]
name = sts_bridge.Client.from_env().workspace().name
fs = fsspec.filesystem("workspace")
url = f"workspace://{name}/{key}"
if call == "put_file":
    fs.put_file(local, url)
else:
    with open(local, "rb") as f:
        fs.pipe_file(url, f.read())
"""


@pytest.mark.parametrize("call", ["put_file", "pipe_file"])
def test_upload_left_by_kill_9_of_a_workspace_put_is_listed_and_aborted(
    faults: Proxied, checker: Checker, tmp_path: Path, call: str
) -> None:
    """``fs.put_file`` / ``fs.pipe_file`` of 101 MiB through ``workspace://``
    (multipart for s3fs's rules too: 2 x 50 MiB and more): the multipart
    upload is recorded before its first part, so after ``kill -9``
    ``sts-bridge uploads`` lists it and ``--abort`` removes it from the store;
    a call that returns leaves no record."""

    env = _env(faults)
    records = tmp_path / "cache" / "uploads"
    src = tmp_path / "big.bin"
    data = pattern_file(src, 101 * MiB, seed=11)
    done = subprocess.run(
        [sys.executable, "-c", _FS_PUTTER, call, checker.base + "whole.bin", str(src)],
        env=env, capture_output=True, timeout=HANG_GUARD,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert list(records.glob("*.json")) == []
    assert checker.uploads() == []
    assert checker.objects() == {checker.base + "whole.bin": len(data)}

    faults.s3.set("stall", after=512 * 1024)  # every part stalls; small requests pass
    proc = subprocess.Popen(
        [sys.executable, "-c", _FS_PUTTER, call, checker.base + "fs.bin", str(src)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _kill_9_once_recorded(proc, checker, records, HANG_GUARD)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
        faults.s3.heal()
    upload = _list_and_abort_the_orphan(checker, records, env, "fs.bin")
    assert upload["source"] == (str(src) if call == "put_file" else None)
    _assert_clean(checker, {checker.base + "whole.bin": data})


#: The head of a pipeline (``cat`` of a slow source): the first argv[2] bytes of
#: the file argv[1] on stdout, then the file argv[3] created, then it waits for
#: the rest of its data, which never comes before the signal.
_PRODUCER = """
import sys, time
with open(sys.argv[1], "rb") as f:
    sys.stdout.buffer.write(f.read(int(sys.argv[2])))
sys.stdout.buffer.flush()
open(sys.argv[3], "w").close()
time.sleep(3600)
"""

#: ``ws.upload(stdin, key)`` in a thread, while the main thread blocks SIGINT:
#: the kernel hands Ctrl-C to the uploading threads, where Python runs no
#: handler, so no KeyboardInterrupt reaches the upload before it reads the end
#: of file the dying producer leaves; only sts_bridge.interrupts saw the signal.
_THREAD_UPLOADER = """
import signal, sys, threading, sts_bridge
from sts_bridge.interrupts import watching
ws = sts_bridge.Client.from_env().workspace()
outcome = []
def upload():
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        ws.upload(sys.stdin.buffer, sys.argv[1])
        outcome.append("stored")
    except KeyboardInterrupt:
        outcome.append("interrupted")
with watching():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        uploader.join()
    except KeyboardInterrupt:  # the handler runs once the main thread runs Python again
        uploader.join()
print(outcome[0])
"""


def _ctrl_c_pipeline(
    producer_args: list[str],
    consumer_args: list[str],
    env: dict[str, str],
    written: Path,
    records: Path | None,
) -> tuple[Any, bytes, bytes]:
    """``producer | consumer`` in a process group of its own; once the producer
    has written what it had (``written`` exists) and, with ``records``, the
    consumer's multipart upload is recorded, SIGINT to the group. Returns the
    consumer, its stdout and its stderr."""
    producer = subprocess.Popen(
        [*producer_args, str(written)],
        env=env, stdout=subprocess.PIPE, process_group=0, preexec_fn=_as_from_a_terminal,
    )  # fmt: skip
    try:
        proc = subprocess.Popen(
            consumer_args,
            env=env, stdin=producer.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            process_group=producer.pid, preexec_fn=_as_from_a_terminal,
        )  # fmt: skip
        assert producer.stdout is not None
        producer.stdout.close()  # the consumer holds the pipe's read end alone
        try:
            _wait_for(
                lambda: (
                    proc.poll() is not None
                    or (written.exists() and (records is None or any(records.glob("*.json"))))
                ),
                HANG_GUARD,
            )
            assert proc.poll() is None, proc.communicate(timeout=60)[1].decode()
            os.killpg(producer.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=HANG_GUARD)
        finally:
            proc.kill()
    finally:
        producer.kill()
        producer.wait(timeout=60)
    return proc, out, err


@pytest.mark.parametrize("length", ["short", "multipart"])
@pytest.mark.parametrize("uploader", ["cli", "thread"])
def test_ctrl_c_of_a_pipeline_never_stores_a_cut_off_stream(
    faults: Proxied, checker: Checker, tmp_path: Path, uploader: str, length: str
) -> None:
    """``producer | sts-bridge upload - --to k`` in a process group of its own,
    Ctrl-C to the whole group (as a terminal sends it) while the producer
    still owes data: the producer dies, the upload reads an end of file, and
    must abort instead of storing what it read. A short stream (one PUT) and
    a multipart one, 3 rounds each: the key is absent or holds the whole
    data, never a prefix, and no multipart upload or record is left.
    ``thread``: the SDK's upload in a thread that alone takes the signal."""
    env = _env(faults)
    records = tmp_path / "cache" / "uploads"
    src = tmp_path / "whole.bin"
    whole = pattern_file(src, 24 * MiB, seed=12)
    sent = 3 * MiB if length == "short" else 20 * MiB  # one PUT / parts of 8, 8, 4 MiB
    consumer = (
        [sys.executable, "-m", "sts_bridge", "upload", "-", "--to"]
        if uploader == "cli"
        else [sys.executable, "-c", _THREAD_UPLOADER]
    )
    for round_ in range(3):
        key = f"{checker.base}stream-{round_}.bin"
        command = [sys.executable, "-c", _PRODUCER, str(src), str(sent)]
        proc, out, err = _ctrl_c_pipeline(
            command, [*consumer, key], env, tmp_path / f"written-{round_}",
            records if length == "multipart" else None,
        )  # fmt: skip
        stored = checker.objects().get(key)
        assert stored is None or checker.data(key) == whole, (round_, stored, err.decode())
        assert checker.uploads() == []
        assert list(records.glob("*.json")) == []
        if uploader == "cli":
            assert proc.returncode == 130, err.decode()
            assert "Traceback" not in err.decode()
        else:
            assert out.decode().split() == ["interrupted"], err.decode()
    _assert_clean(checker, {})


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_interrupted_run_aborts_its_uploads_and_leaves_nothing(
    faults: Proxied, checker: Checker, tmp_path: Path, sig: int
) -> None:
    """`sts-bridge run` with a multipart upload and a download in flight and a
    line not started: the signal cancels them; unlike a single `upload`, the
    upload is aborted (a batch is run again as a whole), the download's temp
    file removed, and the line that did not start never starts."""
    src = tmp_path / "big.bin"
    pattern_file(src, 17 * MiB, seed=9)  # parts of 8, 8, 1 MiB
    key = checker.base + "obj.bin"
    checker.put(key, pattern_file(tmp_path / "obj.bin", 17 * MiB, seed=10))
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "later.txt").write_text("never uploaded\n")
    batch = tmp_path / "batch.txt"
    batch.write_text(
        f"upload {src} --to {checker.base}big.bin\n"
        f"download {key} {out / 'obj.bin'}\n"
        f"upload {tmp_path / 'later.txt'} --to {checker.base}later.txt\n"
    )
    faults.s3.set("stall", after=512 * 1024)  # hold parts and ranges mid-way
    # Held requests are retried after the stall timeout: 4 attempts of 8 s keep
    # both lines in flight until the signal on a loaded machine (with the suite's
    # 2 s the upload may fail first, and the third line start).
    env = {**_env(faults), "STS_BRIDGE_STALL_TIMEOUT": "8"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sts_bridge", "run", "--jobs", "2", str(batch)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=_as_from_a_terminal,
    )  # fmt: skip
    try:
        _wait_for(lambda: len(checker.uploads()) == 1 and _strays(out) != [], HANG_GUARD)
        proc.send_signal(sig)
        said = b""
        while b"interrupted: stopping" not in said:  # the signal was taken ...
            line = proc.stderr.readline()
            assert line, said.decode()
            said += line
        assert b"stopping 2 line(s) in flight" in said and b"1 not started" in said, said.decode()
        faults.s3.heal()  # ... and the parts and ranges held move again once retried
        stdout, rest = proc.communicate(timeout=HANG_GUARD)
        err = said + rest
    finally:
        proc.kill()
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err.decode()
    assert "Traceback" not in err.decode()
    assert "the others did not run" in err.decode().splitlines()[-2]
    assert stdout == b""
    _assert_clean(checker, {key: (tmp_path / "obj.bin").read_bytes()})  # no upload left
    assert not list((tmp_path / "cache" / "uploads").glob("*.json"))  # no resume state
    assert sorted(p.name for p in out.iterdir()) == []  # no temp file, no partial file


def test_run_lines_share_their_connections_to_the_store(
    faults: Proxied, checker: Checker, tmp_path: Path
) -> None:
    """`sts-bridge run`: the uploads and downloads of its lines borrow the
    workspace's connections instead of opening one each (a thousand small
    uploads would pay a thousand connections and TLS handshakes). One line at a
    time: one connection, counted by the proxy in front of the store."""
    expected: dict[str, bytes] = {}
    lines = []
    for i in range(4):
        src = tmp_path / f"up{i}.bin"
        src.write_bytes(bytes([i]) * (20_000 + i))
        expected[checker.base + f"up{i}.bin"] = src.read_bytes()
        lines.append(f"upload {src} --to {checker.base}up{i}.bin")
    out = tmp_path / "out"
    out.mkdir()
    for i in range(3):
        key = checker.base + f"down{i}.bin"
        expected[key] = pattern_file(tmp_path / f"down{i}.bin", 300_000 + i, seed=20 + i)
        checker.put(key, expected[key])
        lines.append(f"download {key} {out / f'down{i}.bin'}")
    batch = tmp_path / "batch.txt"
    batch.write_text("\n".join(lines) + "\n")
    faults.s3.reset_counters()
    result, _ = run_cli(["run", "--jobs", "1", str(batch)], _env(faults))
    assert result.returncode == 0, result.stderr.decode()
    assert faults.s3.connections == 1, f"{faults.s3.connections} connections for {len(lines)} lines"
    for i in range(3):
        assert (out / f"down{i}.bin").read_bytes() == expected[checker.base + f"down{i}.bin"]
    _assert_clean(checker, expected)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill -9", "SIGTERM"])
def test_killed_download_leaves_no_stray_file_after_rerun(
    faults: Proxied, checker: Checker, tmp_path: Path, sig: int
) -> None:
    data = pattern_file(tmp_path / "src.bin", 17 * MiB, seed=7)
    key = checker.base + "obj.bin"
    checker.put(key, data)
    out = tmp_path / "out"
    out.mkdir()
    faults.s3.set("stall", after=512 * 1024)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sts_bridge", "download", key, str(out / "obj.bin")],
        env=_env(faults), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for(lambda: faults.s3.hits >= 1)
        time.sleep(0.2)
        proc.send_signal(sig)
        faults.s3.heal()
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
        assert _strays(out) == []  # cleaned up on the way out
    assert not (out / "obj.bin").exists()
    again, _ = run_cli(["download", key, str(out / "obj.bin")], _env(faults))
    assert again.returncode == 0, again.stderr.decode()
    assert (out / "obj.bin").read_bytes() == data
    assert _strays(out) == []


# --------------------------------------------------------------------------
# credentials and disks
# --------------------------------------------------------------------------
def test_credentials_expiring_mid_part(
    short_faults: Proxied, readers: dict[int, Any], tmp_path: Path
) -> None:
    """5 s STS credentials, parts slowed to ~3 MiB/s: parts outlive the
    credentials that signed them."""
    from faults_support import make_checker

    checker = make_checker(short_faults.platform, readers, tmp_path / "checker-cache")
    data = pattern_file(tmp_path / "slow.bin", 17 * MiB, seed=8)  # parts of 8, 8, 1 MiB
    short_faults.s3.set("trickle", rate=2 * MiB)  # ~4 s per 8 MiB part
    args = ["upload", str(tmp_path / "slow.bin"), "--to", checker.base]
    # bytes the kernel buffers count as sent: a 2 s stall timeout would fire
    # while they drain at 2 MiB/s
    env = {**_env(short_faults), "STS_BRIDGE_STALL_TIMEOUT": "10"}
    result, seconds = run_cli(args, env)
    assert result.returncode == 0, result.stderr.decode()
    _assert_clean(checker, {checker.base + "slow.bin": data})
    print(f"FAULT credentials expire mid-part: success in {seconds:.1f} s")


def test_store_refusing_cached_credentials_fetches_new_ones(
    faults: Proxied, checker: Checker, tmp_path: Path
) -> None:
    import json

    env = _env(faults)
    first, _ = run_cli(["ls", checker.base], env)
    assert first.returncode == 0, first.stderr.decode()
    (cache,) = [
        p
        for p in (tmp_path / "cache" / "sts").glob("*.json")
        if json.loads(p.read_text()).get("credentials")
    ]
    doc = json.loads(cache.read_text())
    doc["credentials"]["secret_key"] = "x" * len(doc["credentials"]["secret_key"])
    cache.write_text(json.dumps(doc))  # the store answers SignatureDoesNotMatch
    src = tmp_path / "a.txt"
    src.write_bytes(b"after a refusal")
    for args in (["ls", checker.base], ["upload", str(src), "--to", checker.base]):
        result, _ = run_cli(args, env)
        assert result.returncode == 0, result.stderr.decode()
    assert json.loads(cache.read_text())["credentials"]["secret_key"] != "x" * 40
    _assert_clean(checker, {checker.base + "a.txt": b"after a refusal"})


def test_full_disk_download_is_one_line_error_and_leaves_nothing(
    faults: Proxied, checker: Checker, tmp_path: Path
) -> None:
    import shutil

    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root for a private tmpfs")
    data = pattern_file(tmp_path / "src.bin", 4 * MiB, seed=9)
    key = checker.base + "obj.bin"
    checker.put(key, data)
    small = tmp_path / "small"
    small.mkdir()
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {small} && "
        f"{sys.executable} -m sts_bridge download {key} {small}/obj.bin; "
        f"echo EXIT=$?; ls -A {small}"
    )
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        env=_env(faults),
        capture_output=True,
        timeout=120,
    )
    out = result.stdout.decode()
    assert "EXIT=1" in out, (out, result.stderr.decode())
    assert out.strip().endswith("EXIT=1"), out  # ls printed nothing: no stray file
    errors = [ln for ln in result.stderr.decode().splitlines() if "error:" in ln]
    assert len(errors) == 1 and "No space left" in errors[0], result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
    assert list(small.iterdir()) == []  # the private mount never reached this namespace
