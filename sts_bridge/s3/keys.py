"""Key confinement: every object key a user passes stays inside the workspace prefix.

A workspace is a bucket *prefix*; STS credentials narrowed to that prefix
make the server refuse keys outside it, but only after a round trip and with
an opaque 403. Worse, some keys are ambiguous: ``a/../b`` is a different
object from ``b`` for S3, yet every file tool (and every person) reads it as
``b``. So unsafe keys are refused here, with a clear message, before any
request is made.

Refused: empty keys, absolute keys (leading ``/``), backslashes, ``.`` and
``..`` segments, empty segments (``a//b``, trailing ``/``), control
characters, text that is not valid Unicode (lone surrogates), and full keys
(prefix included) longer than 1024 bytes of UTF-8 (the S3 limit).
"""

from __future__ import annotations

import re

from sts_bridge.errors import InvalidKeyError

__all__ = [
    "MAX_KEY_BYTES",
    "check_relative_key",
    "folder_prefix",
    "relative_key",
    "workspace_key",
    "workspace_prefix",
]

MAX_KEY_BYTES = 1024


# Unicode category Cc, exactly: C0 controls, DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


# Anything that check_relative_key refuses (except empty keys, encoding and
# trailing '/'), in one pass: the fast path for presigning thousands of keys.
_SUSPECT = re.compile(r"^/|//|(?:^|/)\.\.?(?:/|$)|\\|[\x00-\x1f\x7f-\x9f]")


def _has_control(text: str) -> str | None:
    match = _CONTROL.search(text)
    return match.group() if match else None


def _check_prefix(prefix: str) -> None:
    if prefix and not prefix.endswith("/"):
        raise InvalidKeyError(
            f"workspace prefix {prefix!r} does not end with '/'",
            hint="this is a workspace configuration problem; report it to the platform",
        )


def check_relative_key(key: str, *, allow_trailing_slash: bool = False) -> str:
    """Return ``key`` when it is a safe relative key; raise :class:`InvalidKeyError`.

    ``allow_trailing_slash`` accepts ``results/`` (a prefix, for listing and
    recursive deletes); a plain key never ends with ``/``.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"object key must be a string, not {type(key).__name__}")
    if key == "":
        raise InvalidKeyError(
            "empty object key", hint="name the object, e.g. 'results/run-1/output.tif'"
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(
            f"object key {key!r} is not valid Unicode text",
            hint="use text that encodes to UTF-8 (no lone surrogates)",
        ) from exc
    bad = _has_control(key)
    if bad is not None:
        raise InvalidKeyError(
            f"object key {key!r} contains the control character {bad!r}",
            hint="remove newlines, tabs and other control characters from the key",
        )
    if "\\" in key:
        raise InvalidKeyError(
            f"object key {key!r} contains a backslash",
            hint="use '/' to separate folders, e.g. 'results/run-1/output.tif'",
        )
    if key.startswith("/"):
        raise InvalidKeyError(
            f"object key {key!r} is absolute",
            hint="keys are relative to the workspace: drop the leading '/'",
        )
    body = key[:-1] if allow_trailing_slash and key.endswith("/") else key
    for segment in body.split("/"):
        if segment == "":
            raise InvalidKeyError(
                f"object key {key!r} has an empty segment ('//' or a trailing '/')",
                hint="write each folder once between single '/' and end with a name",
            )
        if segment in (".", ".."):
            raise InvalidKeyError(
                f"object key {key!r} has a {segment!r} segment",
                hint="keys cannot point outside or around the workspace; "
                "use a plain relative key such as 'results/run-1/output.tif'",
            )
    return key


def _check_length(full_key: str, key: str) -> None:
    size = len(full_key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(
            f"object key {key[:60]!r}... is {size} bytes long with the workspace prefix; "
            f"S3 allows at most {MAX_KEY_BYTES} bytes of UTF-8",
            hint="use a shorter key",
        )


def workspace_key(prefix: str, key: str) -> str:
    """The full S3 key of relative ``key`` in a workspace whose prefix is ``prefix``.

    Raises :class:`InvalidKeyError` for unsafe keys (see the module docstring);
    no request is ever made for such a key.
    """
    _check_prefix(prefix)
    if (
        type(key) is str
        and key
        and key[-1] != "/"
        and _SUSPECT.search(key) is None
        and key.isascii()
        and len(prefix) + len(key) <= MAX_KEY_BYTES
    ):
        return prefix + key  # fast path: plainly safe ASCII key
    check_relative_key(key)
    full = prefix + key
    _check_length(full, key)
    return full


def workspace_prefix(prefix: str, sub: str = "") -> str:
    """The full S3 prefix for listing/deleting under relative ``sub`` ("" = everything).

    ``sub`` may end with ``/`` (``results/``) or not (``results/run-`` matches
    ``results/run-1`` and ``results/run-2``, as S3 prefixes do).
    """
    _check_prefix(prefix)
    if sub == "":
        return prefix
    check_relative_key(sub, allow_trailing_slash=True)
    full = prefix + sub
    _check_length(full, sub)
    return full


def folder_prefix(folder: str) -> str:
    """The relative prefix of a folder for recursive operations: ``""`` for the
    workspace root (only ``""`` or ``"/"``), else ``folder`` with one trailing ``/``.

    Raises :class:`InvalidKeyError` for anything :func:`check_relative_key`
    refuses: ``"//"``, ``"a//"`` or ``"/a"`` never silently become the root.
    """
    if folder in ("", "/"):
        return ""
    sub = folder if folder.endswith("/") else folder + "/"
    check_relative_key(sub, allow_trailing_slash=True)
    return sub


def relative_key(prefix: str, full_key: str) -> str:
    """The inverse of :func:`workspace_key`: ``full_key`` without the workspace prefix.

    Raises :class:`InvalidKeyError` when ``full_key`` is not inside ``prefix``.
    """
    _check_prefix(prefix)
    if not full_key.startswith(prefix):
        raise InvalidKeyError(f"object key {full_key!r} is outside the workspace prefix {prefix!r}")
    return full_key[len(prefix) :]
