"""The fast presigner is byte-identical to botocore's generate_presigned_url."""

from __future__ import annotations

import random
import zlib
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config

from sts_bridge.s3.signer import MAX_EXPIRES, Signer

NOW = datetime(2026, 3, 1, 23, 59, 58, tzinfo=timezone.utc)
ACCESS = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEJr//////////wEaDH+/tok=en"
OPS = {"GET": "get_object", "PUT": "put_object", "HEAD": "head_object", "DELETE": "delete_object"}

ENDPOINTS = [
    ("http://127.0.0.1:8000", "path", "us-east-1"),
    ("http://localhost:80/", "path", "us-east-1"),
    ("https://S3.Example.org", "path", "eu-central-1"),
    ("https://s3.example.org:8443/storage/", "path", "eu-central-1"),
    ("http://[::1]:9000", "path", "us-east-1"),
    ("https://s3.eu-west-1.amazonaws.com", "virtual", "eu-west-1"),
    ("https://s3.amazonaws.com", "virtual", "us-east-1"),
]

FIXED_KEYS = [
    "a2s/plain/key.txt",
    "a2s/with space/and+plus=eq~tilde",
    "a2s/a b/ü~+=&?#%x*'()!$,;:@[]{}|^`\"<>",
    "a2s/日本語/ファイル.txt",
    "a2s/émoji🎉.png",
    "a2s/" + "x" * 1000,
    "a2s/trailing.",
    "a2s/-_.~",
]

ALPHABET = "abcXYZ019 -_.~!$&'()*+,;=:@/%?#[]^`{|}<>\"" + "éüßñ日本語ファイル🎉\u00a0\u2028\ufeff"


def _random_keys(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        "p/" + "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40))) for _ in range(n)
    ]


def _creds(token: str | None) -> Any:
    return SimpleNamespace(access_key=ACCESS, secret_key=SECRET, token=token)


def _botocore(endpoint: str, style: str, region: str, token: str | None) -> Any:
    session = boto3.session.Session(
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        aws_session_token=token,
        region_name=region,
    )
    return session.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(signature_version="s3v4", s3={"addressing_style": style}),
    )


@pytest.mark.parametrize("token", [TOKEN, None], ids=["sts", "static"])
@pytest.mark.parametrize(("endpoint", "style", "region"), ENDPOINTS)
def test_byte_identical_to_botocore(
    endpoint: str, style: str, region: str, token: str | None
) -> None:
    client = _botocore(endpoint, style, region, token)
    signer = Signer(
        endpoint_url=endpoint,
        bucket="gep-processing-results",
        region=region,
        credentials=_creds(token),
        addressing_style=style,
    )
    keys = FIXED_KEYS + _random_keys(40, seed=zlib.crc32(endpoint.encode()))
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW):
        for method, op in OPS.items():
            for expires in (1, 3600, MAX_EXPIRES):
                ours = signer.presign_many(keys, method, expires, now=NOW)
                for key, url in zip(keys, ours, strict=True):
                    theirs = client.generate_presigned_url(
                        op,
                        Params={"Bucket": "gep-processing-results", "Key": key},
                        ExpiresIn=expires,
                    )
                    assert url == theirs, (method, key)


def test_single_presign_matches_many_and_signing_key_reused() -> None:
    signer = Signer(
        endpoint_url="http://127.0.0.1:8000", bucket="b", region="r", credentials=_creds(TOKEN)
    )
    one = signer.presign("k", "GET", 60, now=NOW)
    assert one == signer.presign_many(["k"], "GET", 60, now=NOW)[0]
    key_before = signer._signing_key("20260301")
    assert signer._signing_key("20260301") is key_before  # derived once per day
    later = NOW + timedelta(seconds=5)  # next day: 2026-03-02
    assert "X-Amz-Date=20260302T000003Z" in signer.presign("k", "GET", 60, now=later)


def test_query_parameters() -> None:
    signer = Signer(
        endpoint_url="http://127.0.0.1:8000", bucket="b", region="r", credentials=_creds(TOKEN)
    )
    url = signer.presign("dir/a b", "put", 900, now=NOW)
    parts = urlsplit(url)
    assert parts.path == "/b/dir/a%20b"
    query = dict(parse_qsl(parts.query))
    assert query["X-Amz-Security-Token"] == TOKEN
    assert query["X-Amz-Expires"] == "900"
    assert query["X-Amz-Credential"] == f"{ACCESS}/20260301/r/s3/aws4_request"
    assert len(query["X-Amz-Signature"]) == 64


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"method": "POST"}, ValueError),
        ({"expires_in": 0}, ValueError),
        ({"expires_in": MAX_EXPIRES + 1}, ValueError),
        ({"expires_in": 1.5}, TypeError),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    signer = Signer(
        endpoint_url="http://127.0.0.1:8000", bucket="b", region="r", credentials=_creds(None)
    )
    with pytest.raises(error):
        signer.presign("k", **kwargs)


def test_naive_time_refused() -> None:
    signer = Signer(
        endpoint_url="http://127.0.0.1:8000", bucket="b", region="r", credentials=_creds(None)
    )
    with pytest.raises(ValueError):
        signer.presign("k", now=datetime(2026, 1, 1))


@pytest.mark.parametrize("token", [TOKEN, None])
def test_header_signature_matches_botocore(token: str | None) -> None:
    """sign_request (used for PUT/UploadPart bodies) agrees with botocore's S3SigV4Auth."""
    from botocore.auth import S3SigV4Auth
    from botocore.credentials import Credentials

    signer = Signer(
        endpoint_url="http://127.0.0.1:8000",
        bucket="bkt",
        region="us-east-1",
        credentials=_creds(token),
    )
    payload = "ab" * 32
    url, headers = signer.sign_request(
        "PUT",
        "dir/a b+ü",
        query={"partNumber": "3", "uploadId": "2~abc/+="},
        headers={"Content-Type": "text/plain", "x-amz-meta-owner": "alice"},
        payload_sha256=payload,
        now=NOW,
    )
    request = AWSRequest(
        method="PUT",
        url=url,
        headers={
            k: v for k, v in headers.items() if k.lower() not in ("authorization", "x-amz-date")
        },
    )
    with (
        mock.patch("botocore.auth.get_current_datetime", return_value=NOW),
        mock.patch.object(S3SigV4Auth, "payload", return_value=payload),
    ):
        S3SigV4Auth(Credentials(ACCESS, SECRET, token), "s3", "us-east-1").add_auth(request)
    assert request.headers["Authorization"] == headers["Authorization"]


def test_clock_timestamp_is_the_formatted_second_and_base_url() -> None:
    """Without ``now`` the signer formats the clock once per second; same text as strftime."""
    import time

    signer = Signer(
        endpoint_url="http://127.0.0.1:8000/",
        bucket="bkt",
        region="us-east-1",
        credentials=_creds(TOKEN),
    )
    assert signer.base_url == "http://127.0.0.1:8000"
    assert signer.object_url("a b").startswith(signer.base_url + "/bkt/")
    assert signer._timestamp(NOW) == "20260301T235958Z"
    for _ in range(3):
        before = int(time.time())
        stamp = signer._timestamp(None)
        after = int(time.time())
        allowed = {
            datetime.fromtimestamp(t, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            for t in range(before, after + 1)
        }
        assert stamp in allowed
    url, headers = signer.sign_request("PUT", "k")
    assert url == signer.object_url("k")
    assert headers["x-amz-date"] in {
        datetime.fromtimestamp(t, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        for t in range(int(time.time()) - 2, int(time.time()) + 1)
    }
    # a signature made from the clock equals one made from the same explicit instant
    explicit = datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=timezone.utc
    )
    assert signer.sign_request("PUT", "k", now=explicit) == (url, headers)


def test_virtual_base_url_has_the_bucket_host() -> None:
    signer = Signer(
        endpoint_url="https://s3.example.org",
        bucket="bkt",
        region="us-east-1",
        credentials=_creds(None),
        addressing_style="virtual",
    )
    assert signer.base_url == "https://bkt.s3.example.org"
    assert signer.object_url("k") == "https://bkt.s3.example.org/k"
