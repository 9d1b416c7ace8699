"""The local half of ``sts-bridge sync``: hashing, the hash cache, the listing reader."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sts_bridge.s3 import sync


def test_hash_file_streams_md5_and_sha256(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one read chunk
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    got = sync.hash_file(path)
    assert got.md5 == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert got.sha256 == hashlib.sha256(data).hexdigest()


def _only(root: Path) -> sync._LocalFile:
    files = sync._walk(root, None, None).files
    assert len(files) == 1
    return next(iter(files.values()))


def test_hash_cache_trusts_only_the_same_inode_size_mtime_and_ctime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STS_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sync, "RACY_WINDOW_NS", 0)
    root = tmp_path / "tree"
    root.mkdir()
    (root / "a.txt").write_bytes(b"one")
    f = _only(root)
    cache = sync._HashCache(root, tmp_path / "cache")
    assert cache.get(f) is None
    cache.put(f, sync.hash_file(f.path))
    cache.save()
    assert cache.path.stat().st_mode & 0o777 == 0o600

    again = sync._HashCache(root, tmp_path / "cache")
    assert again.get(_only(root)) == sync.hash_file(f.path)

    st = f.path.stat()
    f.path.write_bytes(b"two")  # same size; mtime put back: only ctime tells
    os.utime(f.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sync._HashCache(root, tmp_path / "cache").get(_only(root)) is None


def test_recent_files_are_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STS_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "tree"
    root.mkdir()
    (root / "new.txt").write_bytes(b"just written")
    f = _only(root)
    cache = sync._HashCache(root, tmp_path / "cache")
    cache.put(f, sync.hash_file(f.path))
    cache.save()  # its ctime is inside RACY_WINDOW_NS: a rewrite might not move it
    assert sync._HashCache(root, tmp_path / "cache").get(f) is None


def test_a_broken_cache_file_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STS_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "tree"
    root.mkdir()
    (root / "a.txt").write_bytes(b"a")
    cache = sync._HashCache(root, tmp_path / "cache")
    cache.path.parent.mkdir(parents=True)
    cache.path.write_text("{not json")
    cache.path.chmod(0o600)
    assert sync._HashCache(root, tmp_path / "cache").get(_only(root)) is None


def test_walk_applies_filters_and_skips_partial_downloads(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    for rel in ("keep.tif", "sub/keep.tif", "sub/drop.tmp", "sub/.x.tif.123-0a1b2c3d.part"):
        (root / rel).write_bytes(b"x")
    (root / "link").symlink_to(root / "sub")  # a linked folder is not followed: said so
    got = sync._walk(root, ["*.tif", "*.part"], ["sub/keep*"])
    assert sorted(got.files) == ["keep.tif"]  # exclude wins over include; .part never data
    got = sync._walk(root, None, ["*.tmp"])
    assert sorted(got.files) == ["keep.tif", "sub/keep.tif"]
    assert [(s.path, s.reason.split(" (")[0]) for s in got.skipped] == [
        ("link", "a link to a folder")
    ]


def test_listing_page_reader_unescapes_keys_and_etags() -> None:
    block = (
        b"<Key>a2s/odd &amp; &lt;name&gt;.txt</Key><LastModified>x</LastModified>"
        b"<ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag><Size>42</Size>"
    )
    assert sync._listed(block) == (
        "a2s/odd & <name>.txt",
        42,
        "0123456789abcdef0123456789abcdef",
    )


def test_hash_cache_keeps_composites_per_part_size_and_drops_old_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setattr(sync, "RACY_WINDOW_NS", 0)
    root = tmp_path / "tree"
    root.mkdir()
    (root / "a.bin").write_bytes(b"x" * 100)
    f = _only(root)
    cache = sync._HashCache(root, tmp_path / "cache")
    cache.put(f, sync.hash_file(f.path))
    cache.put_composite(f, 5 * 1024 * 1024, "c5-1")
    cache.put_composite(f, 8 * 1024 * 1024, "c8-1")
    cache.save()

    again = sync._HashCache(root, tmp_path / "cache")
    assert again.get(f) == sync.hash_file(f.path)
    assert again.get_composite(f, 5 * 1024 * 1024) == "c5-1"
    assert again.get_composite(f, 8 * 1024 * 1024) == "c8-1"
    assert again.get_composite(f, 16 * 1024 * 1024) is None  # another part size: computed again

    # a cache written by an older sts-bridge (version 1: no composites) is dropped
    ident = list(f.ident)
    cache.path.write_text(json.dumps({"version": 1, "files": {"a.bin": [*ident, "m", "s"]}}))
    old = sync._HashCache(root, tmp_path / "cache")
    assert old.get(f) is None and old.get_composite(f, 5 * 1024 * 1024) is None
