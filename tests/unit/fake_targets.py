"""Fakes the unit tests of the S3 engines share."""

from __future__ import annotations

from typing import Any


class NoRequestTarget:
    """A transfer target whose engines may be built and configured, never used:
    asking it for credentials (a request about to be made) fails the test."""

    bucket, prefix, endpoint_url, region, addressing_style, verify = (
        "b",
        "p/",
        "http://127.0.0.1:9",
        "us-east-1",
        "path",
        True,
    )

    def credentials(self) -> None:
        raise AssertionError("no request is made")


def read_request_head(reader: Any) -> bytes | None:
    """The next request head a loopback server reads (up to its blank line),
    or ``None`` when the client closed the connection first."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline()
        if not line:
            return None
        head += line
    return head


def content_length(head: bytes) -> int:
    """The ``Content-Length`` of a request head (0 without one)."""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0
