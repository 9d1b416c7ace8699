"""``sts-bridge sync`` on the local platform: both ways, by content.

S3 requests are counted by wrapping the engine's one request method
(``S3Http.call``): the requests still reach radosgw.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pty
import select
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sts_bridge
from sts_bridge.s3 import digests
from sts_bridge.s3 import sync as sync_module
from sts_bridge.s3 import upload as _upload
from sts_bridge.s3.config import TransferConfig
from sts_bridge.s3.sync import plan_sync, run_sync

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
WS = "gep-processing-results-a2s-service-workspace"


@pytest.fixture
def folder() -> Iterator[str]:
    """A fresh workspace folder for one test (removed afterwards)."""
    name = f"sync-{uuid.uuid4().hex[:12]}/"
    yield name
    # the platform may be gone at session end: nothing to keep then
    with contextlib.suppress(Exception):
        sts_bridge.Client.from_env().workspace(WS).delete(name, recursive=True)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _rewrite_same_size_same_mtime(path: Path, data: bytes) -> None:
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n" * 10,
        "sub/b.bin": os.urandom(70_000),
        "sub/deeper/c.json": b'{"c": 1}',
        "odd name & <co>.txt": b"escaped in the listing's XML",
        "skip.tmp": b"excluded",
        "big.bin": os.urandom(17 * MiB),  # multipart (threshold 16 MiB)
    }
    for rel, data in files.items():
        _write(root / rel, data)
    return files


def _composite(data: bytes, part_size: int) -> str:
    """S3's composite SHA-256 of ``data`` in ``part_size`` parts: ``<hex>-<parts>``."""
    parts = [
        hashlib.sha256(data[i : i + part_size]).digest() for i in range(0, len(data), part_size)
    ]
    return f"{hashlib.sha256(b''.join(parts)).hexdigest()}-{len(parts)}"


def _local(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_sync_both_ways_by_content(
    platform_env: dict[str, str],
    cli: Any,
    tmp_path: Path,
    folder: str,
    requests_made: Counter[str],
) -> None:
    src = tmp_path / "src"
    files = _tree(src)
    url = f"workspace://{WS}/{folder}"
    status, out, err = cli("sync", str(src), url, "--exclude", "*.tmp")
    assert status == 0, err
    assert out.startswith("uploaded 5 ") and "unchanged 0" in out
    ws = sts_bridge.Client.from_env().workspace(WS)
    listed = {o.key: o.size for o in ws.list(folder)}
    assert listed == {folder + k: len(v) for k, v in files.items() if k != "skip.tmp"}

    # unchanged: nothing sent (a listing, one HEAD for the multipart object)
    requests_made.clear()
    status, out, err = cli("sync", str(src), url, "--exclude", "*.tmp")
    assert status == 0, err
    assert "uploaded 0 " in out and "unchanged 5" in out
    assert requests_made["PUT"] == requests_made["POST"] == requests_made["DELETE"] == 0
    assert requests_made["HEAD"] == 1

    # same size, same mtime, other bytes: found by content (MD5 ETag / recorded SHA-256)
    _rewrite_same_size_same_mtime(src / "a.txt", b"ALPHA\n" * 10)
    big = bytearray(files["big.bin"])
    big[9 * MiB : 9 * MiB + 4] = b"XXXX"
    _rewrite_same_size_same_mtime(src / "big.bin", bytes(big))
    status, out, err = cli("sync", str(src), url, "--exclude", "*.tmp", "--dry-run")
    assert status == 0, err
    assert out.splitlines() == [
        "upload   a.txt  (changed (content), 60 bytes)",
        f"upload   big.bin  (changed (content), {17 * MiB} bytes)",
    ]
    status, out, err = cli("sync", str(src), url, "--exclude", "*.tmp")
    assert status == 0 and out.startswith("uploaded 2 "), err
    head = ws.s3_client().head_object(Bucket=ws.bucket, Key=ws.prefix + folder + "big.bin")
    # a multipart object records S3's composite SHA-256 and its part size, no whole-file SHA-256
    part_size = int(head["Metadata"]["sha256-part-size"])
    assert head["Metadata"]["sha256-composite"] == _composite(bytes(big), part_size)
    assert "sha256" not in head["Metadata"]

    # download into an empty folder, then nothing to do
    dst = tmp_path / "dst"
    status, out, err = cli("sync", url, str(dst))
    assert status == 0, err
    assert out.startswith("downloaded 5 ")
    expected = {k: v for k, v in _local(src).items() if k != "skip.tmp"}
    assert _local(dst) == expected
    status, out, err = cli("sync", url, str(dst), "--json")
    assert status == 0, err
    assert '"downloaded": []' in out

    # a local copy rewritten with the same size and mtime is put back
    _rewrite_same_size_same_mtime(dst / "sub" / "b.bin", os.urandom(70_000))
    status, out, err = cli("sync", url, str(dst))
    assert status == 0 and out.startswith("downloaded 1 "), err
    assert _local(dst) == expected


def test_dry_run_changes_nothing_and_delete_needs_yes_off_a_tty(
    platform_env: dict[str, str],
    cli: Any,
    tmp_path: Path,
    folder: str,
    requests_made: Counter[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = tmp_path / "src"
    _write(src / "keep.txt", b"keep")
    _write(src / "gone.txt", b"gone")
    url = f"workspace://{WS}/{folder}"
    assert cli("sync", str(src), url)[0] == 0
    (src / "gone.txt").unlink()
    _write(src / "new.txt", b"new")

    requests_made.clear()
    status, out, err = cli("sync", str(src), url, "--delete", "--dry-run", "--json")
    assert status == 0, err
    import json

    plan = json.loads(out)
    assert [(a["action"], a["key"]) for a in plan["actions"]] == [
        ("upload", "new.txt"),
        ("delete", "gone.txt"),
    ]
    assert plan["unchanged"] == 1
    assert set(requests_made) <= {"GET"}  # the listing only

    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    status, out, err = cli("sync", str(src), url, "--delete")
    assert status == 2
    assert "error: refusing to delete 1 file(s)" in err and "hint: add --yes" in err
    assert "Traceback" not in err
    assert set(requests_made) <= {"GET"}
    ws = sts_bridge.Client.from_env().workspace(WS)
    assert sorted(o.key for o in ws.list(folder)) == [folder + "gone.txt", folder + "keep.txt"]

    status, out, err = cli("sync", str(src), url, "--delete", "--yes", "--log-interval", "1e-9")
    assert status == 0, err
    assert "deleted 1" in out
    # off a terminal: one summary line per interval (here: after every action), no \r
    assert "sts-bridge: sync: 2/2 done, " in err and "\r" not in err
    assert sorted(o.key for o in ws.list(folder)) == [folder + "keep.txt", folder + "new.txt"]


def _run_on_pty(argv: list[str], answer: bytes, timeout: float = 120.0) -> tuple[int, str]:
    """Run ``argv`` with stdin/stdout/stderr on a pseudo-terminal; answer the first prompt."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        argv, stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True
    )
    os.close(secondary)
    output = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
                if not answered and b"[y/N]" in output:
                    os.write(primary, answer + b"\n")
                    answered = True
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=30), output.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)


def test_delete_asks_on_a_terminal(
    platform_env: dict[str, str], cli: Any, tmp_path: Path, folder: str
) -> None:
    src = tmp_path / "src"
    _write(src / "keep.txt", b"keep")
    _write(src / "gone.txt", b"gone")
    url = f"workspace://{WS}/{folder}"
    assert cli("sync", str(src), url)[0] == 0
    (src / "gone.txt").unlink()
    ws = sts_bridge.Client.from_env().workspace(WS)
    argv = [sys.executable, "-m", "sts_bridge", "sync", str(src), url, "--delete"]

    status, output = _run_on_pty(argv, b"n")
    assert "delete 1 file(s) in workspace" in output
    assert status == 1 and "nothing changed" in output
    assert len(list(ws.list(folder))) == 2

    status, output = _run_on_pty(argv, b"y")
    assert status == 0, output
    assert [o.key for o in ws.list(folder)] == [folder + "keep.txt"]


def test_interrupted_sync_resumes_and_large_files_continue_their_upload(
    platform_env: dict[str, str], tmp_path: Path, folder: str
) -> None:
    src = tmp_path / "src"
    big = os.urandom(20 * MiB)
    _write(src / "big.bin", big)
    for i in range(6):
        _write(src / f"small/{i}.txt", f"small {i}".encode())
    ws = sts_bridge.Client.from_env().workspace(WS)

    def stop_mid_big_file(status: Any) -> None:
        if status.bytes_done >= 8 * MiB:  # the small files and the first 8 MiB part
            raise KeyboardInterrupt

    plan = plan_sync(ws, "upload", src, folder)
    assert len(plan.actions) == 7
    with pytest.raises(KeyboardInterrupt):
        run_sync(
            ws,
            plan,
            progress=stop_mid_big_file,
            config=TransferConfig(part_concurrency=1, range_concurrency=1),
        )
    assert not any(o.key == folder + "big.bin" for o in ws.list(folder))

    sent: list[int] = []
    original = _upload.UploadEngine.put_part

    def recording(self: Any, full_key: str, uid: str, number: int, *rest: Any) -> Any:
        sent.append(number)
        return original(self, full_key, uid, number, *rest)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_upload.UploadEngine, "put_part", recording)
        plan = plan_sync(ws, "upload", src, folder)
        assert [a.key for a in plan.actions] == ["big.bin"]  # the small files are done
        report = run_sync(ws, plan)
    assert report.uploaded == ["big.bin"] and not report.failed
    assert 1 not in sent and sorted(sent) == [2, 3]  # part 1 was kept
    got = ws.s3_client().get_object(Bucket=ws.bucket, Key=ws.prefix + folder + "big.bin")
    assert got["Body"].read() == big


def test_hash_cache_skips_unchanged_files_but_sees_a_rewrite(
    platform_env: dict[str, str], tmp_path: Path, folder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_module, "RACY_WINDOW_NS", 0)
    hashed: list[str] = []
    original = sync_module.hash_file

    def counting(path: Path) -> Any:
        hashed.append(path.name)
        return original(path)

    monkeypatch.setattr(sync_module, "hash_file", counting)
    src = tmp_path / "src"
    for i in range(5):
        _write(src / f"{i}.txt", f"file {i}".encode())
    ws = sts_bridge.Client.from_env().workspace(WS)
    run_sync(ws, plan_sync(ws, "upload", src, folder))
    assert plan_sync(ws, "upload", src, folder).unchanged == 5  # every file hashed by now
    assert sorted(set(hashed)) == [f"{i}.txt" for i in range(5)]
    cache_files = list((Path(platform_env["STS_BRIDGE_CACHE_DIR"]) / "sync").glob("*.json"))
    assert len(cache_files) == 1 and cache_files[0].stat().st_mode & 0o777 == 0o600

    hashed.clear()
    plan = plan_sync(ws, "upload", src, folder)
    assert hashed == [] and plan.actions == [] and plan.unchanged == 5

    _rewrite_same_size_same_mtime(src / "3.txt", b"FILE 3")
    plan = plan_sync(ws, "upload", src, folder)
    assert hashed == ["3.txt"]  # ctime moved: hashed again
    assert [(a.key, a.reason) for a in plan.actions] == [("3.txt", "changed (content)")]


def test_sync_outlives_short_credentials(
    short_lived_platform: Any, short_lived_platform_env: dict[str, str], tmp_path: Path
) -> None:
    lifetime = short_lived_platform.sts_duration
    folder = f"sync-{uuid.uuid4().hex[:12]}/"
    src = tmp_path / "src"
    for i in range(6):
        _write(src / f"{i}.txt", os.urandom(1000 + i))
    ws = sts_bridge.Client.from_env().workspace(WS)
    plan = plan_sync(ws, "upload", src, folder)
    short_lived_platform.reset_stats()
    started = time.monotonic()

    def slow(status: Any) -> None:
        time.sleep(lifetime * 0.5)  # every file waits half a credential lifetime

    report = run_sync(
        ws,
        plan,
        progress=slow,
        config=TransferConfig(part_concurrency=1, range_concurrency=1, file_concurrency=1),
    )
    assert time.monotonic() - started > 2 * lifetime, "must span several credential lifetimes"
    assert not report.failed and len(report.uploaded) == 6
    assert short_lived_platform.api_stats()["sts_exchanges"] >= 2
    back = tmp_path / "back"
    report = run_sync(ws, plan_sync(ws, "download", back, folder))
    assert not report.failed
    assert _local(back) == _local(src)
    ws.delete(folder, recursive=True)


def test_sync_refuses_bad_arguments(platform_env: dict[str, str], cli: Any, tmp_path: Path) -> None:
    status, _, err = cli("sync", str(tmp_path), str(tmp_path / "x"))
    assert status == 2 and "error: sync needs one local folder" in err
    status, _, err = cli("sync", str(tmp_path), f"workspace://{WS}/../up/")
    assert status == 2 and "error:" in err and "Traceback" not in err
    status, _, err = cli("sync", str(tmp_path / "missing"), f"workspace://{WS}/x/")
    assert status == 1 and "is not a folder" in err


def test_hash_cache_lives_in_the_configured_cache_dir(
    platform_env: dict[str, str], tmp_path: Path, folder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_module, "RACY_WINDOW_NS", 0)  # cache the file just written
    src = tmp_path / "src"
    _write(src / "a.txt", b"a")
    configured = tmp_path / "configured-cache"
    ws = sts_bridge.Client.from_env(cache_dir=str(configured)).workspace(WS)
    run_sync(ws, plan_sync(ws, "upload", src, folder))
    assert len(list(configured.glob("sync/*.json"))) == 1


def test_multipart_objects_compare_by_composite_cached_per_part_size(
    platform_env: dict[str, str], tmp_path: Path, folder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_module, "RACY_WINDOW_NS", 0)  # cache the files just written
    composites: list[tuple[str, int]] = []
    original = sync_module.path_composite_sha256

    def counting(path: Path, part_size: int) -> str:
        composites.append((Path(path).name, part_size))
        return original(path, part_size)

    monkeypatch.setattr(sync_module, "path_composite_sha256", counting)
    src = tmp_path / "src"
    data = os.urandom(11 * MiB)
    _write(src / "mp.bin", data)
    ws = (
        sts_bridge.Client.from_env()
        .workspace(WS)
        .with_transfer_config(TransferConfig(part_size=5 * MiB, multipart_threshold=5 * MiB))
    )
    run_sync(ws, plan_sync(ws, "upload", src, folder))
    head = ws.s3_client().head_object(Bucket=ws.bucket, Key=ws.prefix + folder + "mp.bin")
    assert head["ETag"].strip('"').endswith("-3")
    assert head["Metadata"] == {
        "sha256-composite": _composite(data, 5 * MiB),
        "sha256-part-size": str(5 * MiB),
    }

    plan = plan_sync(ws, "upload", src, folder)
    assert plan.actions == [] and plan.unchanged == 1
    assert composites == [("mp.bin", 5 * MiB)]  # the part size the object records
    plan = plan_sync(ws, "upload", src, folder)
    assert plan.actions == [] and composites == [("mp.bin", 5 * MiB)]  # from the hash cache

    changed = bytearray(data)
    changed[7 * MiB] ^= 1
    _rewrite_same_size_same_mtime(src / "mp.bin", bytes(changed))
    plan = plan_sync(ws, "upload", src, folder)
    assert [(a.key, a.reason) for a in plan.actions] == [("mp.bin", "changed (content)")]
    assert len(composites) == 2  # ctime moved: the composite is computed again


def test_a_large_file_uploads_in_parts_grown_to_its_size_and_syncs_by_them(
    platform_env: dict[str, str],
    cli: Any,
    tmp_path: Path,
    folder: str,
    requests_made: Counter[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 257 MiB is more than 32 parts of 8 MiB: the default parts grow to 9 MiB, 29 of them
    src = tmp_path / "src"
    src.mkdir()
    path = src / "large.bin"
    with open(path, "wb") as f:
        for _ in range(257):
            f.write(os.urandom(MiB))
    hashed: list[int] = []  # the part size of each SHA-256 pass over the file
    original = digests.file_digests

    def counting(fd: int, size: int, part_size: int) -> list[bytes]:
        hashed.append(part_size)
        return original(fd, size, part_size)

    monkeypatch.setattr(digests, "file_digests", counting)
    monkeypatch.setattr(_upload, "file_digests", counting)
    status, _, err = cli("upload", str(path), "--to", folder + "large.bin", "--workspace", WS)
    assert status == 0, err
    # one pass: the CLI hashed ahead in the parts the engine then sent
    assert hashed == [9 * MiB]
    ws = sts_bridge.Client.from_env().workspace(WS)
    head = ws.s3_client().head_object(Bucket=ws.bucket, Key=ws.prefix + folder + "large.bin")
    assert head["ETag"].strip('"').endswith("-29")  # the store's own count of parts
    assert head["Metadata"] == {
        "sha256-composite": _composite(path.read_bytes(), 9 * MiB),
        "sha256-part-size": str(9 * MiB),
    }

    # sync compares by the composite in the recorded part size: unchanged
    url = f"workspace://{WS}/{folder}"
    requests_made.clear()
    status, out, err = cli("sync", str(src), url)
    assert status == 0, err
    assert "uploaded 0 " in out and "unchanged 1" in out
    assert requests_made["PUT"] == requests_made["POST"] == 0

    # one byte of the 20th part changed, same size and mtime: found by content
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(19 * 9 * MiB + 5)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    status, out, err = cli("sync", str(src), url, "--dry-run")
    assert status == 0, err
    assert out.splitlines() == [f"upload   large.bin  (changed (content), {257 * MiB} bytes)"]
    status, out, err = cli("sync", str(src), url)
    assert status == 0 and out.startswith("uploaded 1 "), err
    head = ws.s3_client().head_object(Bucket=ws.bucket, Key=ws.prefix + folder + "large.bin")
    assert head["Metadata"]["sha256-composite"] == _composite(path.read_bytes(), 9 * MiB)


def test_multipart_object_with_the_whole_file_sha256_of_older_versions(
    platform_env: dict[str, str], tmp_path: Path, folder: str
) -> None:
    # what sts-bridge before the composite recorded for a multipart upload
    data = os.urandom(11 * MiB)
    _write(tmp_path / "src" / "old.bin", data)
    ws = sts_bridge.Client.from_env().workspace(WS)
    s3, key = ws.s3_client(), ws.prefix + folder + "old.bin"
    upload_id = s3.create_multipart_upload(
        Bucket=ws.bucket, Key=key, Metadata={"sha256": hashlib.sha256(data).hexdigest()}
    )["UploadId"]
    etags = [
        s3.upload_part(
            Bucket=ws.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=n,
            Body=data[(n - 1) * 6 * MiB : n * 6 * MiB],
        )["ETag"]
        for n in (1, 2)
    ]
    s3.complete_multipart_upload(
        Bucket=ws.bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n - 1]} for n in (1, 2)]},
    )
    plan = plan_sync(ws, "upload", tmp_path / "src", folder)
    assert plan.actions == [] and plan.unchanged == 1  # compared by the whole-file SHA-256

    changed = bytearray(data)
    changed[MiB] ^= 1
    _rewrite_same_size_same_mtime(tmp_path / "src" / "old.bin", bytes(changed))
    plan = plan_sync(ws, "upload", tmp_path / "src", folder)
    assert [(a.key, a.reason) for a in plan.actions] == [("old.bin", "changed (content)")]
