"""Fakes the unit tests of the S3 engines share."""

from __future__ import annotations


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
