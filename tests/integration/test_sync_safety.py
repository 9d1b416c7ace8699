"""Sync and upload never destroy by mistake (issue 20, item 2), on the local platform.

- an invalid include/exclude pattern is a usage error before any request;
- a missing or empty source is an error, never "delete everything", unless
  ``--allow-empty-source`` says so;
- a killed download's ``.part`` files are never uploaded or kept, and the
  next run removes them;
- what a transfer leaves out (special files, dangling links, link loops,
  remote keys that cannot be local names) is said on stderr and in the
  exit status;
- two sources onto one key, or a named file the filters leave out, are
  refused before anything is sent.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sts_bridge
from sts_bridge.s3.sync import plan_sync

pytestmark = pytest.mark.integration

WS = "gep-processing-results-a2s-service-workspace"
USAGE, ERROR, NOT_FOUND = 2, 1, 6


@pytest.fixture
def ws(platform_env: dict[str, str]) -> Any:
    return sts_bridge.Client.from_env().workspace(WS)


@pytest.fixture
def folder(ws: Any) -> Iterator[str]:
    """A fresh workspace folder for one test (removed afterwards)."""
    name = f"syncsafe-{uuid.uuid4().hex[:12]}/"
    yield name
    with contextlib.suppress(Exception):
        ws.delete(name, recursive=True)


def _keys(ws: Any, folder: str) -> list[str]:
    return sorted(o.key[len(folder) :] for o in ws.list(folder, recursive=True))


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


def _dead_pid() -> int:
    """The pid of a process that has exited (as after ``kill -9``)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _assert_one_error(err: str) -> None:
    assert "Traceback" not in err and "unexpected" not in err.lower(), err
    assert err.count("sts-bridge: error: ") == 1 and err.count("sts-bridge: hint: ") == 1, err


# ------------------------------------------------------------------ patterns
@pytest.mark.parametrize("option", ["--exclude", "--include"])
@pytest.mark.parametrize("pattern", ["data[1-3", "[", "[a-"])
def test_an_invalid_pattern_is_a_usage_error_before_any_request(
    cli: Any,
    ws: Any,
    folder: str,
    tmp_path: Path,
    requests_made: Counter[str],
    option: str,
    pattern: str,
) -> None:
    for name in ("data1", "data2", "data3"):
        ws.upload(name.encode(), folder + name)
    local = tmp_path / "local"
    local.mkdir()
    (local / "other").write_bytes(b"x")
    requests_made.clear()
    url = f"workspace://{WS}/{folder}"
    for argv in (
        ("sync", str(local), url, "--delete", "-y", option, pattern),
        ("sync", url, str(local), "--delete", "-y", option, pattern),
        ("upload", str(local), "--to", folder, option, pattern),
    ):
        status, out, err = cli(*argv)
        assert status == USAGE, (argv, err)
        _assert_one_error(err)
        assert out == ""
    assert sum(requests_made.values()) == 0
    assert _keys(ws, folder) == ["data1", "data2", "data3"]
    assert _files(local) == ["other"]
    with pytest.raises(sts_bridge.InvalidArgumentError):
        plan_sync(ws, "upload", local, folder, exclude=[pattern], delete=True)
    with pytest.raises(ValueError):  # the SDK's directory upload shares the check
        ws.upload_directory(local, folder, include=[pattern])
    assert sum(requests_made.values()) == 0


# -------------------------------------------------------------- empty source
def test_a_missing_workspace_folder_never_empties_the_local_one(
    cli: Any, ws: Any, folder: str, tmp_path: Path
) -> None:
    local = tmp_path / "DIR"
    local.mkdir()
    (local / "precious.txt").write_bytes(b"keep me")
    typo = f"workspace://{WS}/typo-does-not-exist-{uuid.uuid4().hex[:8]}/"
    status, _out, err = cli("sync", typo, str(local), "--delete", "-y")
    assert status == NOT_FOUND, err
    _assert_one_error(err)
    assert "--allow-empty-source" in err
    assert _files(local) == ["precious.txt"]
    with pytest.raises(sts_bridge.ObjectNotFoundError):
        plan_sync(ws, "download", local, "typo-does-not-exist/", delete=True)
    # said explicitly: the local folder is made to match the empty source
    status, _out, err = cli("sync", typo, str(local), "--delete", "-y", "--allow-empty-source")
    assert status == 0, err
    assert _files(local) == []


def test_an_empty_or_missing_local_folder_never_empties_the_workspace_folder(
    cli: Any, ws: Any, folder: str, tmp_path: Path
) -> None:
    ws.upload(b"keep me", folder + "precious.txt")
    url = f"workspace://{WS}/{folder}"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "sub").mkdir()  # folders alone are no files
    for source in (empty, tmp_path / "missing"):
        status, _out, err = cli("sync", str(source), url, "--delete", "-y")
        assert status == ERROR, err
        _assert_one_error(err)
        assert _keys(ws, folder) == ["precious.txt"]
    status, _out, err = cli("sync", str(empty), url, "--delete", "-y", "--allow-empty-source")
    assert status == 0, err
    assert _keys(ws, folder) == []


# ---------------------------------------------------------------- temp files
def test_temp_files_of_a_killed_download_are_never_synced_and_are_cleaned(
    cli: Any, ws: Any, folder: str, tmp_path: Path
) -> None:
    ws.upload(b"a" * 100, folder + "a.bin")
    ws.upload(b"b" * 100, folder + "sub/b.bin")
    local = tmp_path / "DIR"
    url = f"workspace://{WS}/{folder}"
    assert cli("sync", url, str(local))[0] == 0
    dead = _dead_pid()
    # what `kill -9` during a sync download leaves next to each destination
    stale = [
        local / f".a.bin.{dead}-0badcafe.part",
        local / "sub" / f".b.bin.{dead}-12345678.part",
        local / "sub" / f".c.bin.{dead}.part",  # an older naming
    ]
    running = local / f".a.bin.{os.getpid()}-00000001.part"  # a running download's: kept
    for path in (*stale, running):
        path.write_bytes(b"half a file")

    # a sync back uploads none of them, and removes the stale ones
    status, _out, err = cli("sync", str(local), url, "--delete", "-y", "--json")
    assert status == 0, err
    assert _keys(ws, folder) == ["a.bin", "sub/b.bin"]
    assert not any(p.exists() for p in stale)
    assert running.exists()

    # --delete does not keep them as real files either: the next run removes them
    for path in stale:
        path.write_bytes(b"half a file")
    status, _out, err = cli("sync", url, str(local), "--delete", "-y")
    assert status == 0, err
    assert "removed 3 temp file(s)" in err
    assert _files(local) == sorted(["a.bin", "sub/b.bin", running.name])


# ------------------------------------------------------------- what is skipped
def _special_tree(root: Path) -> list[str]:
    """A tree with one regular file and every kind of entry that is not one."""
    root.mkdir()
    (root / "data.txt").write_bytes(b"data")
    (root / "dangling").symlink_to(root / "missing")
    (root / "loop").symlink_to(root / "loop")
    (root / "up").symlink_to(root)  # a link to a folder: a loop if followed
    os.mkfifo(root / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    sock.close()
    return ["dangling", "fifo", "loop", "sock", "up"]


def test_upload_of_a_tree_says_what_it_skips(
    cli: Any, ws: Any, folder: str, tmp_path: Path, requests_made: Counter[str]
) -> None:
    tree = tmp_path / "tree"
    skipped = _special_tree(tree)
    with pytest.raises(sts_bridge.TransferError):  # the SDK refuses unless told what to do
        ws.upload_directory(tree, folder)
    assert sum(requests_made.values()) == 0
    seen: list[tuple[str, str]] = []
    ws.upload_directory(tree, folder, on_skip=lambda p, r: seen.append((p, r)))
    assert sorted(Path(p).name for p, _ in seen) == skipped
    assert dict((Path(p).name, r) for p, r in seen)["fifo"] == "a FIFO (named pipe)"

    status, _out, err = cli("upload", str(tree), "--to", folder + "cli/")
    assert status == ERROR, err
    for name in skipped:
        assert f"warning: skipped '{tree / name}'" in err, err
    assert "error: 5 path(s) skipped" in err
    assert _keys(ws, folder) == ["cli/data.txt", "data.txt"]


def test_sync_up_says_what_it_skips(cli: Any, ws: Any, folder: str, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    skipped = _special_tree(tree)
    status, _out, err = cli("sync", str(tree), f"workspace://{WS}/{folder}")
    assert status == ERROR, err
    for name in skipped:
        assert f"warning: skipped '{name}'" in err, err
    assert "error: 5 path(s) skipped" in err
    assert _keys(ws, folder) == ["data.txt"]


def test_sync_down_says_which_keys_cannot_be_local_names(
    cli: Any, ws: Any, folder: str, tmp_path: Path
) -> None:
    s3 = ws.s3_client()
    bad = ["sub/../../x", "a//b", "new\nline"]
    for key in bad:  # written by another tool: sts-bridge refuses such keys itself
        s3.put_object(Bucket=ws.bucket, Key=ws.prefix + folder + key, Body=b"x")
    ws.upload(b"fine", folder + "fine.txt")
    local = tmp_path / "DIR"
    status, _out, err = cli("sync", f"workspace://{WS}/{folder}", str(local))
    assert status == ERROR, err
    assert "warning: skipped 'sub/../../x'" in err
    assert "warning: skipped 'a//b'" in err
    assert "warning: skipped 'new\\nline'" in err
    assert "error: 3 path(s) skipped" in err
    assert _files(local) == ["fine.txt"]
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------ upload planning
def test_two_sources_onto_one_key_are_refused_before_anything_is_sent(
    cli: Any,
    ws: Any,
    folder: str,
    tmp_path: Path,
    requests_made: Counter[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "f.txt").write_bytes(b"first")
    (tmp_path / "clash").mkdir()
    (tmp_path / "clash" / "f.txt").write_bytes(b"second")
    monkeypatch.chdir(tmp_path)
    requests_made.clear()
    status, _out, err = cli("upload", "f.txt", "clash", "--to", folder + "clash2/")
    assert status == USAGE, err
    _assert_one_error(err)
    assert f"{folder}clash2/f.txt" in err
    assert sum(requests_made.values()) == 0
    assert _keys(ws, folder) == []


def test_filters_apply_to_named_files(
    cli: Any, ws: Any, folder: str, tmp_path: Path, requests_made: Counter[str]
) -> None:
    (tmp_path / "f.txt").write_bytes(b"text")
    (tmp_path / "g.tif").write_bytes(b"tiff")
    requests_made.clear()
    status, _out, err = cli("upload", str(tmp_path / "f.txt"), "--include", "*.tif", "--to", folder)
    assert status == USAGE, err
    assert "nothing to upload" in err
    assert sum(requests_made.values()) == 0
    status, _out, err = cli(
        "upload", str(tmp_path / "f.txt"), str(tmp_path / "g.tif"), "--include", "*.tif",
        "--to", folder,
    )  # fmt: skip
    assert status == ERROR, err
    assert "warning: skipped" in err and "f.txt" in err
    assert _keys(ws, folder) == ["g.tif"]
