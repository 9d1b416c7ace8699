"""The SHA-256 pass of a multipart upload, and the pass started ahead by the CLI."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from sts_bridge.s3.digests import (
    file_digests,
    part_length,
    start_digests,
    taken_digests,
)

MiB = 1024 * 1024


def _file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def test_file_digests_are_the_whole_and_part_sha256(tmp_path: Path) -> None:
    src = _file(tmp_path / "f.bin", 11 * MiB + 7)
    data = src.read_bytes()
    fd = os.open(src, os.O_RDONLY)
    try:
        whole, parts = file_digests(fd, len(data), 5 * MiB)
    finally:
        os.close(fd)
    assert whole == hashlib.sha256(data).hexdigest()
    assert parts == [hashlib.sha256(data[i : i + 5 * MiB]).digest() for i in (0, 5 * MiB, 10 * MiB)]
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
