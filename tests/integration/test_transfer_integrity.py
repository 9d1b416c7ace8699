"""Integrity of uploads and downloads against the local platform (issue 11,
items 1-4 and 12): what a download may write or replace, files that change
while they are uploaded, folders that cannot be read, include/exclude
patterns that match nothing, and recursive deletes of empty-segment folders.
Special files are made inside the test's temporary directory, never in /dev.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from cli_support import Cli

from sts_bridge.errors import InvalidKeyError, TransferError
from sts_bridge.s3.config import TransferConfig

pytestmark = [pytest.mark.integration]

MiB = 1024 * 1024


@pytest.fixture
def run_cli(run_cli: Cli) -> Cli:
    """Bytes out: a download to ``-`` writes the object's bytes to stdout."""
    return dataclasses.replace(run_cli, text=False)


@pytest.fixture
def ws(platform_env: dict[str, str]) -> Any:
    from sts_bridge import Client

    return Client.from_env().workspace()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A folder of its own for download destinations (the cache is in tmp_path)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def base() -> str:
    return f"integrity/{uuid.uuid4().hex[:12]}/"


def one_error(result: subprocess.CompletedProcess[bytes], code: int) -> str:
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert "Traceback" not in err and "unexpected" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("sts-bridge: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def uploads_under(platform: Any, ws: Any, base: str) -> list[str]:
    # the platform's admin keys: workspace credentials may not list uploads
    s3 = platform.s3.client("s3")
    resp = s3.list_multipart_uploads(Bucket=ws.bucket, Prefix=ws.prefix + base)
    return [u["Key"] for u in resp.get("Uploads", [])]


def keys_under(ws: Any, base: str) -> list[str]:
    return sorted(o.key for o in ws.list(base))


# --------------------------------------------------------------------------
# item 1: downloads never replace what they were not asked to write
# --------------------------------------------------------------------------
@pytest.fixture
def stored(ws: Any, base: str) -> tuple[str, bytes]:
    data = os.urandom(300_000)
    ws.upload(data, base + "obj.bin")
    return base + "obj.bin", data


def test_download_writes_through_a_symlink(
    run_cli: Cli, stored: tuple[str, bytes], out: Path
) -> None:
    key, data = stored
    (out / "real.bin").write_bytes(b"old")
    (out / "link").symlink_to("real.bin")
    result = run_cli(["download", key, str(out / "link")])
    assert result.returncode == 0, result.stderr.decode()
    assert (out / "link").is_symlink()
    assert (out / "real.bin").read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == ["link", "real.bin"]


def test_download_streams_into_a_fifo_without_replacing_it(
    run_cli: Cli, stored: tuple[str, bytes], out: Path
) -> None:
    key, data = stored
    fifo = out / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = run_cli(["download", key, str(fifo)])
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert got == [data]
    assert result.stdout == b""  # no path printed: the data went to the FIFO
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in out.iterdir()] == ["fifo"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
def test_download_onto_a_character_device_streams_into_it(
    run_cli: Cli, stored: tuple[str, bytes], out: Path
) -> None:
    key, _ = stored
    null = out / "null"  # the kernel's null device (1, 3), made here, not in /dev
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    result = run_cli(["download", key, str(null)])
    assert result.returncode == 0, result.stderr.decode()
    st = os.lstat(null)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert [p.name for p in out.iterdir()] == ["null"]


def test_download_dash_writes_to_stdout(run_cli: Cli, stored: tuple[str, bytes], out: Path) -> None:
    key, data = stored
    result = run_cli(["download", key, "-"], cwd=out)  # never a file named "-"
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == data
    assert list(out.iterdir()) == []


def test_download_onto_an_existing_directory_is_a_clear_error(
    run_cli: Cli, stored: tuple[str, bytes], out: Path
) -> None:
    key, _ = stored
    (out / "obj.bin").mkdir()  # DEST/<name> is a directory
    result = run_cli(["download", key, str(out)])
    line = one_error(result, 1)
    assert "is a directory" in line
    assert [p.name for p in out.iterdir()] == ["obj.bin"]
    assert list((out / "obj.bin").iterdir()) == []


def test_download_removes_stale_part_files_of_the_same_destination(
    run_cli: Cli, stored: tuple[str, bytes], out: Path
) -> None:
    key, data = stored
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = out / f".obj.bin.{gone.pid}-0badcafe.part"
    stale_old_style = out / f".obj.bin.{gone.pid}.part"
    live = out / f".obj.bin.{os.getpid()}-00000001.part"  # a running download's
    other = out / f".other.bin.{gone.pid}-0badcafe.part"
    for path in (stale, stale_old_style, live, other):
        path.write_bytes(b"partial")
    result = run_cli(["download", key, str(out / "obj.bin")])
    assert result.returncode == 0, result.stderr.decode()
    assert (out / "obj.bin").read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == sorted(["obj.bin", live.name, other.name])


# --------------------------------------------------------------------------
# item 2: a file that changes during its upload is never stored
# --------------------------------------------------------------------------
@pytest.mark.parametrize("change", ["append", "rewrite in place", "truncate"])
def test_file_changed_during_multipart_upload_fails_and_leaves_nothing(
    ws: Any, base: str, tmp_path: Path, change: str, local_platform: Any
) -> None:
    src = tmp_path / "growing.bin"
    src.write_bytes(b"a" * (12 * MiB))
    changed: list[bool] = []

    def progress(done: int, total: int | None) -> None:
        if not changed:  # after the first part: change the file under the upload
            changed.append(True)
            if change == "append":
                with open(src, "ab") as fh:
                    fh.write(b"more")
            elif change == "truncate":  # the next part ends early, while it is sent
                os.truncate(src, 6 * MiB)
            else:
                with open(src, "r+b") as fh:
                    fh.write(b"b" * MiB)

    one_part_at_a_time = TransferConfig(
        part_size=5 * MiB, multipart_threshold=1, part_concurrency=1
    )
    with pytest.raises(TransferError, match="changed while it was being uploaded"):
        ws.with_transfer_config(one_part_at_a_time).upload(
            src, base + "growing.bin", progress=progress
        )
    assert changed
    assert keys_under(ws, base) == []
    assert uploads_under(local_platform, ws, base) == []


def test_small_file_changed_during_upload_is_refused(
    ws: Any, base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sts_bridge.s3 import upload as _upload

    src = tmp_path / "small.txt"
    src.write_bytes(b"first version")
    original = _upload._read_small

    def read_then_change(path: Path, size: int) -> bytes:
        data = original(path, size)
        with open(path, "r+b") as fh:
            fh.write(b"FIRST")  # same size, new bytes, new mtime/ctime
        return data

    monkeypatch.setattr(_upload, "_read_small", read_then_change)
    with pytest.raises(TransferError, match="changed while it was being uploaded"):
        ws.upload(src, base + "small.txt")
    assert keys_under(ws, base) == []


# --------------------------------------------------------------------------
# item 3: folders that cannot be read, patterns that match nothing
# --------------------------------------------------------------------------
def _without_dac(args: list[str]) -> list[str]:
    """Run as root without the capabilities that ignore file permissions."""
    return [
        "setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--",
        *args,
    ]  # fmt: skip


needs_setpriv = pytest.mark.skipif(
    shutil.which("setpriv") is None or os.geteuid() != 0,
    reason="needs setpriv and root to drop CAP_DAC_OVERRIDE",
)


@needs_setpriv
@pytest.mark.parametrize("which", ["subdirectory", "top directory"])
def test_unreadable_folder_fails_the_directory_upload(
    run_cli: Cli, ws: Any, base: str, tmp_path: Path, which: str
) -> None:
    top = tmp_path / "data"
    (top / "locked").mkdir(parents=True)
    (top / "a.txt").write_text("a")
    (top / "locked" / "b.txt").write_text("b")
    locked = top if which == "top directory" else top / "locked"
    locked.chmod(0)
    try:
        result = subprocess.run(
            _without_dac([sys.executable, "-m", "sts_bridge", "upload", str(top), "--to", base]),
            env=run_cli.env,
            capture_output=True,
            timeout=120,
        )
    finally:
        locked.chmod(0o755)
    line = one_error(result, 1)
    assert "cannot read the folder" in line and str(locked) in line
    assert keys_under(ws, base) == []


def test_invalid_pattern_is_a_usage_error(run_cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("x")
    result = run_cli(["upload", str(tmp_path / "d"), "--include", "["])
    assert result.returncode == 2, result.stderr.decode()
    assert "without its ']'" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_patterns_matching_nothing_are_an_error(
    run_cli: Cli, ws: Any, base: str, tmp_path: Path
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("x")
    result = run_cli(["upload", str(tmp_path / "d"), "--to", base, "--include", "*.tif"])
    line = one_error(result, 1)
    assert "none of the 1 file(s)" in line
    assert keys_under(ws, base) == []


# --------------------------------------------------------------------------
# item 4: empty segments never mean the workspace root
# --------------------------------------------------------------------------
@pytest.mark.parametrize("folder", ["//", "///", "a//", "//a", "a//b/", "/a"])
def test_recursive_delete_refuses_empty_segments(ws: Any, base: str, folder: str) -> None:
    ws.upload(b"keep me", base + "keep.txt")
    with pytest.raises(InvalidKeyError):
        ws.delete(folder, recursive=True)
    assert keys_under(ws, base) == [base + "keep.txt"]
    assert ws.delete(base, recursive=True) == 1
