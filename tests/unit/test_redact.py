"""Redaction of the shapes botocore, urllib3 and OAuth libraries log, and of remembered values."""

from __future__ import annotations

import logging

import pytest

from sts_bridge._redact import RedactingFilter, guard_library_loggers, redact, remember_secret
from sts_bridge.cli._text import printable

SESSION = "FwoGZXIvYXdzEJr//////////wEaDM1session+token/value=="
KEY_ID = "Q7RAD0SGWKEYID1234"  # radosgw key ids have no AKIA/ASIA shape


def test_botocore_request_repr_loses_token_and_key_id() -> None:
    line = (
        "Sending http request: <AWSPreparedRequest stream_output=False, method=GET, "
        "headers={'X-Amz-Security-Token': b'" + SESSION + "', 'Authorization': "
        "b'AWS4-HMAC-SHA256 Credential=" + KEY_ID + "/20261201/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=abc'}>"
    )
    out = redact(line)
    assert SESSION not in out and KEY_ID not in out
    assert "Sending http request" in out


def test_canonical_request_and_bearer() -> None:
    text = f"x-amz-security-token:{SESSION}\nAuthorization: Bearer abc.def.ghi"
    out = redact(text)
    assert SESSION not in out and "abc.def.ghi" not in out


def test_remembered_values_go_whatever_their_shape() -> None:
    odd = "plain-looking-secret-value-42"
    assert odd in redact(f"value {odd} here")
    remember_secret(odd, None, "short")
    assert odd not in redact(f"value {odd} here")
    assert redact("short words stay") == "short words stay"


def test_guarded_library_logger_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    remember_secret(KEY_ID)
    child = logging.getLogger("botocore.endpoint")
    guard_library_loggers()
    assert any(isinstance(f, RedactingFilter) for f in child.filters)
    with caplog.at_level(logging.DEBUG, logger="botocore.endpoint"):
        child.debug("signed with %s", KEY_ID)
    assert KEY_ID not in caplog.text and "signed with ***" in caplog.text


def test_printable_escapes_control_characters_once() -> None:
    assert printable("a\x1b[31mb\nc\\d") == "a\\x1b[31mb\\nc\\\\d"
    assert printable("a\\b\n", backslash=False) == "a\\b\\n"
    assert printable("plain/key.txt") == "plain/key.txt"
