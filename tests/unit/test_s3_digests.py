"""The SHA-256 pass of a multipart upload, and the pass started ahead by the CLI."""

from __future__ import annotations

import hashlib
import os
import time
import types
from pathlib import Path
from typing import Any

import pytest

from sts_bridge.s3 import digests as digests_module
from sts_bridge.s3.digests import (
    composite_sha256,
    file_digests,
    part_length,
    path_composite_sha256,
    start_digests,
    taken_digests,
)

MiB = 1024 * 1024


def _file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def test_file_digests_are_the_part_sha256_and_give_the_composite(tmp_path: Path) -> None:
    src = _file(tmp_path / "f.bin", 11 * MiB + 7)
    data = src.read_bytes()
    fd = os.open(src, os.O_RDONLY)
    try:
        parts = file_digests(fd, len(data), 5 * MiB)
    finally:
        os.close(fd)
    assert parts == [hashlib.sha256(data[i : i + 5 * MiB]).digest() for i in (0, 5 * MiB, 10 * MiB)]
    # S3's composite: the SHA-256 of the concatenated part digests, and the part count
    assert composite_sha256(parts) == hashlib.sha256(b"".join(parts)).hexdigest() + "-3"
    assert path_composite_sha256(src, 5 * MiB) == composite_sha256(parts)
    assert [part_length(n, 5 * MiB, len(data)) for n in (1, 2, 3, 4)] == [
        5 * MiB,
        5 * MiB,
        MiB + 7,
        0,
    ]


def test_digests_started_ahead_are_taken_for_the_same_file(tmp_path: Path) -> None:
    src = _file(tmp_path / "ahead.bin", 6 * MiB)
    start_digests(src, 5 * MiB)
    fd = os.open(src, os.O_RDONLY)
    try:
        assert taken_digests(src, fd, 5 * MiB) == file_digests(fd, 6 * MiB, 5 * MiB)
        assert taken_digests(src, fd, 5 * MiB) is None  # taken once
    finally:
        os.close(fd)


def test_digests_of_another_part_size_or_a_changed_file_are_not_taken(tmp_path: Path) -> None:
    src = _file(tmp_path / "moved.bin", 6 * MiB)
    start_digests(src, 5 * MiB)
    fd = os.open(src, os.O_RDONLY)
    try:
        assert taken_digests(src, fd, 6 * MiB) is None  # the engine chose another part size
        time.sleep(0.01)
        with open(src, "r+b") as f:  # same size, other bytes: ctime moves
            f.write(b"changed")
        assert taken_digests(src, fd, 5 * MiB) is None
    finally:
        os.close(fd)


def test_a_pass_that_failed_leaves_the_engine_to_hash_and_report(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-file"
    folder.mkdir()
    start_digests(folder, 5 * MiB)  # reading a directory fails in the pass
    src = _file(tmp_path / "other.bin", 10)
    fd = os.open(src, os.O_RDONLY)
    try:
        assert taken_digests(folder, fd, 5 * MiB) is None
    finally:
        os.close(fd)


class _CountingSha256:
    """hashlib.sha256 that counts the hashers made and the bytes they hash."""

    made = 0
    hashed = 0

    def __init__(self, data: bytes = b"") -> None:
        type(self).made += 1
        self._h = hashlib.sha256()
        self.update(data)

    def update(self, data: Any) -> None:
        type(self).hashed += len(data)
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.digest()

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def test_each_byte_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # no whole-file hasher next to the part hashers: one hasher per part, each byte once
    size = 12 * MiB + 3
    src = _file(tmp_path / "once.bin", size)
    monkeypatch.setattr(digests_module, "hashlib", types.SimpleNamespace(sha256=_CountingSha256))
    fd = os.open(src, os.O_RDONLY)
    try:
        parts = file_digests(fd, size, 5 * MiB)
    finally:
        os.close(fd)
    assert len(parts) == 3
    assert _CountingSha256.made == 3 and _CountingSha256.hashed == size


def test_a_file_shorter_than_told_is_refused(tmp_path: Path) -> None:
    from sts_bridge.errors import TransferError

    src = _file(tmp_path / "short.bin", 6 * MiB)
    fd = os.open(src, os.O_RDONLY)
    try:
        with pytest.raises(TransferError, match="shrank"):
            file_digests(fd, 7 * MiB, 5 * MiB)
    finally:
        os.close(fd)
