"""Key confinement: the refusal table and the inverse."""

from __future__ import annotations

import pytest

from sts_bridge.errors import InvalidKeyError
from sts_bridge.s3.keys import (
    MAX_KEY_BYTES,
    check_relative_key,
    relative_key,
    workspace_key,
    workspace_prefix,
)

PREFIX = "a2s/"

REFUSED = [
    ("", "empty"),
    ("/etc/passwd", "absolute"),
    ("/", "absolute"),
    ("..", "'..' segment"),
    ("../other/x", "'..' segment"),
    ("a/../../b", "'..' segment"),
    ("a/..", "'..' segment"),
    (".", "'.' segment"),
    ("./a", "'.' segment"),
    ("a/./b", "'.' segment"),
    ("a//b", "empty segment"),
    ("a/", "empty segment"),
    ("a\\b", "backslash"),
    ("..\\..\\x", "backslash"),
    ("a\nb", "control character"),
    ("a\tb", "control character"),
    ("a\x00b", "control character"),
    ("a\x7fb", "control character"),
    ("a\x85b", "control character"),  # C1 NEL
    ("a\ud800b", "not valid Unicode"),
    ("x" * (MAX_KEY_BYTES - len(PREFIX) + 1), "bytes long"),
    ("é" * 511, "bytes long"),  # 1022 bytes + prefix
]


@pytest.mark.parametrize(("key", "reason"), REFUSED)
def test_refused_keys(key: str, reason: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        workspace_key(PREFIX, key)
    assert reason in info.value.message
    # every refusal says what to do about this key, not only the class's default
    assert info.value.hint and info.value.hint != InvalidKeyError.hint


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "results/run-1/output.tif",
        "with space/and+plus=eq~tilde",
        "日本語/ファイル.txt",
        "émoji🎉.png",
        "...",  # only '.' and '..' are special
        "a..b/..c/d..",
        ".hidden/.file",
        "x" * (MAX_KEY_BYTES - len(PREFIX)),
    ],
)
def test_accepted_keys_round_trip(key: str) -> None:
    full = workspace_key(PREFIX, key)
    assert full == PREFIX + key
    assert relative_key(PREFIX, full) == key


def test_empty_prefix_and_bad_prefix() -> None:
    assert workspace_key("", "a/b") == "a/b"
    with pytest.raises(InvalidKeyError):
        workspace_key("noslash", "a")


def test_non_string_key() -> None:
    with pytest.raises(InvalidKeyError):
        workspace_key(PREFIX, None)  # type: ignore[arg-type]


def test_relative_key_outside_prefix() -> None:
    with pytest.raises(InvalidKeyError):
        relative_key(PREFIX, "other/x")


def test_workspace_prefix() -> None:
    assert workspace_prefix(PREFIX) == PREFIX
    assert workspace_prefix(PREFIX, "results/") == "a2s/results/"
    assert workspace_prefix(PREFIX, "results/run-") == "a2s/results/run-"
    for bad in ("../", "/x/", "a//", "a/../"):
        with pytest.raises(InvalidKeyError):
            workspace_prefix(PREFIX, bad)


def test_trailing_slash_only_for_prefixes() -> None:
    assert check_relative_key("a/", allow_trailing_slash=True) == "a/"
    with pytest.raises(InvalidKeyError):
        check_relative_key("a/")


def test_fast_path_agrees_with_full_check() -> None:
    import random

    rng = random.Random(6)
    alphabet = ["a", "b", "/", ".", "..", "\\", "\n", "\x7f", "é", " ", "~", "//"]
    for _ in range(5000):
        key = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        try:
            check_relative_key(key)
            slow_ok = len((PREFIX + key).encode()) <= MAX_KEY_BYTES
        except InvalidKeyError:
            slow_ok = False
        try:
            fast_ok = workspace_key(PREFIX, key) == PREFIX + key
        except InvalidKeyError:
            fast_ok = False
        assert fast_ok == slow_ok, repr(key)
