"""radosgw with real STS: the properties the SDK relies on, as regression tests.

Starts its own throwaway cluster (``RadosGateway``) and a ``StaticIssuer``
(discovery + JWKS over plain http on loopback, RS256 tokens signed with
PyJWT), then proves what radosgw 16 enforces.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from sts_bridge_devstack.keys import generate_signing_jwk
from sts_bridge_devstack.s3 import (
    RadosGateway,
    StsError,
    missing_binaries,
    role_policy,
    session_policy,
    trust_policy,
)
from sts_bridge_devstack.static_issuer import StaticIssuer

pytestmark = [
    pytest.mark.integration,
    # Under CI the tests run (and fail loudly) even without Ceph: never a silent skip.
    pytest.mark.skipif(
        bool(missing_binaries()) and not os.environ.get("CI"),
        reason="Ceph binaries missing (run `make setup`): " + ", ".join(missing_binaries()),
    ),
]

AUDIENCE = "sts-bridge-test"
BUCKET = "gep-processing-results"
OTHER_BUCKET = "gep-other-bucket"
PREFIX = "a2s/"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _tamper_payload(token: str, **changes: Any) -> str:
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims.update(changes)
    return f"{head}.{_b64url(json.dumps(claims).encode())}.{sig}"


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324


def _crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _error_code(exc: Any) -> tuple[int, str]:
    resp = exc.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp.get("Error", {}).get("Code", "")


def _http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _signed(method: str, url: str, creds: dict[str, Any], body: bytes = b"", **headers: str):
    """A SigV4 request signed by hand, so that a checksum header can lie."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    if not any(k.lower() == "x-amz-content-sha256" for k in hdrs):
        hdrs["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    req = AWSRequest(method=method, url=url, data=body, headers=hdrs)
    c = Credentials(creds["access_key"], creds["secret_key"], creds["session_token"])
    SigV4Auth(c, "s3", "us-east-1").add_auth(req)
    prepared = req.prepare()
    return _http(
        method, prepared.url, body if method in ("PUT", "POST") else None, dict(prepared.headers)
    )


# --------------------------------------------------------------------------
# fixtures: one cluster for the module
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def issuer() -> Iterator[StaticIssuer]:
    iss = StaticIssuer(AUDIENCE).start()
    yield iss
    iss.stop()


@pytest.fixture(scope="module")
def rgw() -> Iterator[RadosGateway]:
    with RadosGateway(memstore_bytes=1 << 30) as gw:
        yield gw


@pytest.fixture(scope="module")
def role_arn(rgw: RadosGateway, issuer: StaticIssuer) -> str:
    rgw.create_bucket(BUCKET)
    rgw.create_bucket(OTHER_BUCKET)
    rgw.register_oidc_provider(issuer.url, [AUDIENCE])
    rgw.register_oidc_provider(issuer.url, [AUDIENCE])  # "already exists" is fine
    return rgw.create_role(
        "gep", trust_policy(issuer.url, AUDIENCE), role_policy([BUCKET, OTHER_BUCKET])
    )


@pytest.fixture
def creds(rgw: RadosGateway, issuer: StaticIssuer, role_arn: str) -> dict[str, Any]:
    return rgw.assume_role_with_web_identity(
        role_arn, issuer.token(), "alice", 900, session_policy(BUCKET, PREFIX)
    )


def _s3(rgw: RadosGateway, creds: dict[str, Any]) -> Any:
    return rgw.client("s3", creds["access_key"], creds["secret_key"], creds["session_token"])


# --------------------------------------------------------------------------
# AssumeRoleWithWebIdentity
# --------------------------------------------------------------------------
def test_valid_token_gets_credentials(rgw, issuer, role_arn):
    c = rgw.assume_role_with_web_identity(role_arn, issuer.token(), "alice", 900)
    assert set(c) == {"access_key", "secret_key", "session_token", "expiration"}
    assert c["access_key"] and c["secret_key"] and c["session_token"]
    lifetime = c["expiration"].timestamp() - time.time()
    assert 880 < lifetime <= 901
    # the issuer was asked for discovery and keys (radosgw does it on every call)
    assert "/.well-known/openid-configuration" in issuer.requests
    assert "/jwks" in issuer.requests


def _other_key_token(issuer: StaticIssuer) -> str:
    other = generate_signing_jwk()
    now = int(time.time())
    claims = {"iss": issuer.url, "sub": "alice", "aud": AUDIENCE, "iat": now, "exp": now + 300}
    return jwt.encode(
        claims, jwt.PyJWK(other).key, algorithm="RS256", headers={"kid": issuer.private_jwk["kid"]}
    )


BAD_TOKENS = {
    "tampered-payload": lambda iss: _tamper_payload(iss.token(), sub="mallory"),
    "tampered-signature": lambda iss: iss.token()[:-6] + "AAAAAA",
    "expired": lambda iss: iss.token(lifetime=-30),
    "wrong-audience": lambda iss: iss.token(aud="someone-else"),
    "wrong-audience-list": lambda iss: iss.token(aud=["account", "someone-else"]),
    "unknown-issuer": lambda iss: iss.token(iss="http://127.0.0.1:9/realms/nobody"),
    "signed-by-another-key": _other_key_token,
    "not-a-jwt": lambda iss: "not-a-jwt",
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_refused(rgw, issuer, role_arn, kind):
    with pytest.raises(StsError) as info:
        rgw.assume_role_with_web_identity(role_arn, BAD_TOKENS[kind](issuer), "alice", 900)
    assert info.value.status in (400, 403)


def test_audience_list_matches_any_element(rgw, issuer, role_arn):
    # Keycloak puts several audiences in `aud`
    rgw.assume_role_with_web_identity(role_arn, issuer.token(aud=["account", AUDIENCE]), "al", 60)


def test_audience_is_only_enforced_by_the_trust_policy(rgw, issuer):
    """radosgw 16 ignores the provider's ClientIDList: the condition is what protects."""
    arn = rgw.create_role(
        "no-audience-condition", trust_policy(issuer.url, None), role_policy([BUCKET])
    )
    rgw.assume_role_with_web_identity(arn, issuer.token(aud="someone-else"), "alice", 60)


def test_bucket_location_is_the_region(rgw, creds, role_arn):
    s3 = _s3(rgw, creds)
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == rgw.region


def test_duration_bounds(rgw, issuer, role_arn):
    asked_at = int(time.time())  # whole seconds, as the expiration is
    c = rgw.assume_role_with_web_identity(role_arn, issuer.token(), "alice", 1)
    # one second after the call at most (measured from before it: load only adds)
    assert c["expiration"].timestamp() <= asked_at + 2
    rgw.assume_role_with_web_identity(role_arn, issuer.token(), "alice", 3600)
    for bad in (0, 3601):
        with pytest.raises(StsError) as info:
            rgw.assume_role_with_web_identity(role_arn, issuer.token(), "alice", bad)
        assert info.value.status == 400


# --------------------------------------------------------------------------
# session policy: confined to bucket/a2s/
# --------------------------------------------------------------------------
def test_session_policy_confines_to_prefix(rgw, creds):
    from botocore.exceptions import ClientError

    s3 = _s3(rgw, creds)
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}inside.txt", Body=b"inside")
    assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}inside.txt")["Body"].read() == b"inside"
    assert s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}inside.txt")["ContentLength"] == 6
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"]]
    assert f"{PREFIX}inside.txt" in keys
    s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}sub/")
    s3.list_multipart_uploads(Bucket=BUCKET, Prefix=PREFIX)
    s3.delete_object(Bucket=BUCKET, Key=f"{PREFIX}inside.txt")

    # the admin puts something outside the prefix and in the other bucket
    admin = rgw.client("s3")
    admin.put_object(Bucket=BUCKET, Key="b2s/outside.txt", Body=b"x")
    admin.put_object(Bucket=OTHER_BUCKET, Key=f"{PREFIX}other.txt", Body=b"x")

    denied = [
        lambda: s3.put_object(Bucket=BUCKET, Key="b2s/new.txt", Body=b"x"),
        lambda: s3.get_object(Bucket=BUCKET, Key="b2s/outside.txt"),
        lambda: s3.delete_object(Bucket=BUCKET, Key="b2s/outside.txt"),
        lambda: s3.put_object(Bucket=BUCKET, Key="a2sx", Body=b"x"),
        lambda: s3.list_objects_v2(Bucket=BUCKET),  # s3:prefix condition
        lambda: s3.list_objects_v2(Bucket=BUCKET, Prefix="a2"),
        lambda: s3.list_objects_v2(Bucket=BUCKET, Prefix="b2s/"),
        lambda: s3.put_object(Bucket=OTHER_BUCKET, Key=f"{PREFIX}x", Body=b"x"),
        lambda: s3.get_object(Bucket=OTHER_BUCKET, Key=f"{PREFIX}other.txt"),
        lambda: s3.list_objects_v2(Bucket=OTHER_BUCKET, Prefix=PREFIX),
    ]
    for i, call in enumerate(denied):
        with pytest.raises(ClientError) as info:
            call()
        status, code = _error_code(info.value)
        assert (status, code) == (403, "AccessDenied"), f"denied[{i}]"


def _listed(s3: Any) -> Any:
    s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)
    return s3


def _used_while_valid(rgw, issuer, role_arn, use):
    """Credentials a few seconds long and what ``use(credentials)`` returned.

    ``use`` must have ended before the credentials expired: on a loaded
    machine a 2 s life can be over before the first request, and a refusal
    then proves nothing. The life doubles until ``use`` ends in time, so the
    test waits on what happened, not on how fast the machine is.
    """
    for lifetime in (2, 4, 8, 16, 32, 64):
        c = rgw.assume_role_with_web_identity(
            role_arn, issuer.token(), "alice", lifetime, session_policy(BUCKET, PREFIX)
        )
        try:
            result = use(c)
        except Exception:
            if _in_time(c):
                raise
            continue
        if _in_time(c):
            return c, result
    pytest.fail("no request ended within a 64 s credential life: the store is too slow")


def _in_time(c: dict[str, Any]) -> bool:
    # half a second before the (whole-second) expiry the store checked valid credentials
    return time.time() < c["expiration"].timestamp() - 0.5


def test_credentials_stop_working_after_their_lifetime(rgw, issuer, role_arn):
    from botocore.exceptions import ClientError

    c, s3 = _used_while_valid(
        rgw,
        issuer,
        role_arn,
        lambda c: _listed(_s3(rgw, c)),
    )
    time.sleep(max(0.0, c["expiration"].timestamp() - time.time()) + 1.2)
    with pytest.raises(ClientError) as info:
        s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)
    assert _error_code(info.value)[0] == 403


def test_missing_or_altered_session_token_is_refused(rgw, issuer, role_arn, creds):
    from botocore.exceptions import ClientError

    other = rgw.assume_role_with_web_identity(role_arn, issuer.token(), "bob", 900)
    no_token = rgw.client("s3", creds["access_key"], creds["secret_key"])
    swapped = rgw.client("s3", creds["access_key"], creds["secret_key"], other["session_token"])
    tok = creds["session_token"]
    altered = tok[:10] + ("A" if tok[10] != "A" else "B") + tok[11:]
    bad_token = rgw.client("s3", creds["access_key"], creds["secret_key"], altered)
    wrong_secret = rgw.client("s3", creds["access_key"], "x" * 40, tok)
    seen = {}
    clients = {
        "no-token": no_token,
        "altered": bad_token,
        "other-session": swapped,
        "wrong-secret": wrong_secret,
    }
    for name, s3 in clients.items():
        with pytest.raises(ClientError) as info:
            s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)
        seen[name] = _error_code(info.value)
    assert seen == {
        "no-token": (403, "AccessDenied"),
        "altered": (400, "InvalidArgument"),  # the encrypted token no longer decodes
        "other-session": (403, "AccessDenied"),
        "wrong-secret": (403, "SignatureDoesNotMatch"),
    }


# --------------------------------------------------------------------------
# presigned URLs
# --------------------------------------------------------------------------
def test_presigned_get(rgw, creds):
    s3 = _s3(rgw, creds)
    key = f"{PREFIX}presigned.txt"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"shared")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=60
    )
    assert url.startswith(f"{rgw.endpoint_url}/{BUCKET}/{PREFIX}")  # path-style
    assert "X-Amz-Security-Token=" in url
    assert _http("GET", url) == (200, b"shared")

    sig_at = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    flipped = "0" if url[sig_at] != "0" else "1"
    assert _http("GET", url[:sig_at] + flipped + url[sig_at + 1 :])[0] == 403
    assert _http("GET", url.replace(key, f"{PREFIX}other.txt"))[0] == 403
    no_token = url.split("X-Amz-Security-Token=")[0] + "&".join(
        p for p in url.split("&") if p.startswith("X-Amz-Signature=")
    )
    assert _http("GET", no_token)[0] == 403

    short = s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=1
    )
    assert _http("GET", short)[0] == 200
    time.sleep(2.2)
    assert _http("GET", short)[0] == 403


def test_presigned_url_dies_with_its_credentials(rgw, issuer, role_arn):
    """As in production: ExpiresIn cannot outlive the STS credentials."""
    rgw.client("s3").put_object(Bucket=BUCKET, Key=f"{PREFIX}p2.txt", Body=b"x")

    def signed_and_read(c: dict[str, Any]) -> str:
        url = _s3(rgw, c).generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": f"{PREFIX}p2.txt"}, ExpiresIn=3600
        )
        assert _http("GET", url)[0] == 200
        return url

    c, url = _used_while_valid(rgw, issuer, role_arn, signed_and_read)
    time.sleep(max(0.0, c["expiration"].timestamp() - time.time()) + 1.2)
    assert _http("GET", url)[0] == 403


# --------------------------------------------------------------------------
# multipart (the transfer engine resumes with ListMultipartUploads/ListParts)
# --------------------------------------------------------------------------
def test_multipart_upload_and_listing(rgw, creds):
    s3 = _s3(rgw, creds)
    key = f"{PREFIX}big.bin"
    part1 = os.urandom(5 << 20)
    part2 = b"tail"
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    e1 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=part1)[
        "ETag"
    ]
    uploads = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=PREFIX).get("Uploads", [])
    assert (key, upload_id) in [(u["Key"], u["UploadId"]) for u in uploads]
    parts = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [(1, e1, len(part1))]
    assert e1 == f'"{hashlib.md5(part1).hexdigest()}"'  # noqa: S324
    e2 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=2, Body=part2)[
        "ETag"
    ]
    done = s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    assert done.get("ETag", "") == ""  # radosgw quirk: HeadObject has it
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ETag"].endswith('-2"')
    assert head["ContentLength"] == len(part1) + len(part2)
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == part1 + part2
    uploads = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=PREFIX).get("Uploads", [])
    assert upload_id not in [u["UploadId"] for u in uploads]

    # an abandoned upload can be found and aborted
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)


# --------------------------------------------------------------------------
# integrity checks radosgw 16 enforces (and the one it ignores)
# --------------------------------------------------------------------------
def test_integrity_checks(rgw, creds):
    s3 = _s3(rgw, creds)
    url = f"{rgw.endpoint_url}/{BUCKET}/{PREFIX}integrity.bin"
    body = b"hello integrity"

    assert _signed("PUT", url, creds, body)[0] == 200
    assert _signed("PUT", url, creds, body, Content_MD5=_md5_b64(body))[0] == 200
    status, text = _signed("PUT", url, creds, body, Content_MD5=_md5_b64(b"other"))
    assert (status, b"<Code>BadDigest</Code>" in text) == (400, True)
    status, text = _signed(
        "PUT", url, creds, body, X_Amz_Content_SHA256=hashlib.sha256(b"other").hexdigest()
    )
    assert (status, b"XAmzContentSHA256Mismatch" in text) == (400, True)
    assert _signed("PUT", url, creds, body, X_Amz_Content_SHA256="UNSIGNED-PAYLOAD")[0] == 200

    # NOT enforced: a wrong CRC32 is stored without complaint
    status, _ = _signed(
        "PUT",
        url,
        creds,
        body,
        x_amz_checksum_crc32=_crc32_b64(b"other"),
        x_amz_sdk_checksum_algorithm="CRC32",
    )
    assert status == 200
    assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}integrity.bin")["Body"].read() == body

    # the same on UploadPart
    key = f"{PREFIX}integrity-mp.bin"
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    part_url = f"{rgw.endpoint_url}/{BUCKET}/{key}?partNumber=1&uploadId={upload_id}"
    part = b"p" * 1024
    status, text = _signed("PUT", part_url, creds, part, Content_MD5=_md5_b64(b"other"))
    assert (status, b"BadDigest" in text) == (400, True)
    status, text = _signed(
        "PUT", part_url, creds, part, X_Amz_Content_SHA256=hashlib.sha256(b"other").hexdigest()
    )
    assert (status, b"XAmzContentSHA256Mismatch" in text) == (400, True)
    status, _ = _signed("PUT", part_url, creds, part, x_amz_checksum_crc32=_crc32_b64(b"other"))
    assert status == 200
    s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)


def test_aws_chunked_checksum_trailer_is_not_supported(rgw, creds):
    """boto3 >= 1.36 over HTTPS sends STREAMING-UNSIGNED-PAYLOAD-TRAILER by default:
    radosgw 16 takes it for a literal SHA-256 and refuses the upload. Clients
    must use request_checksum_calculation="when_required" against it."""
    data = b"hello trailer"
    crc = _crc32_b64(data).encode()
    body = b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % (len(data), data, crc)
    status, text = _signed(
        "PUT",
        f"{rgw.endpoint_url}/{BUCKET}/{PREFIX}trailer.bin",
        creds,
        body,
        X_Amz_Content_SHA256="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        Content_Encoding="aws-chunked",
        x_amz_trailer="x-amz-checksum-crc32",
        x_amz_decoded_content_length=str(len(data)),
    )
    assert (status, b"XAmzContentSHA256Mismatch" in text) == (400, True)


# --------------------------------------------------------------------------
# lifecycle: nothing leaks
# --------------------------------------------------------------------------
def _ceph_processes_under(folder: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if folder in cmdline:
            pids.append(int(entry.name))
    return pids


def test_start_stop_three_times_leaks_nothing():
    for _ in range(3):
        gw = RadosGateway(memstore_bytes=256 << 20)
        gw.start()
        folder = str(gw.workdir)
        pids = [p.pid for p in gw._procs.values()]
        assert len(pids) == 3
        status, _ = _http("GET", gw.endpoint_url)
        assert status == 200
        gw.stop()
        assert not Path(folder).exists()
        assert _ceph_processes_under(folder) == []
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    gw.stop()  # idempotent


def test_missing_binaries_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(Exception, match="make setup"):
        RadosGateway().start()


# --------------------------------------------------------------------------
# long runs: overwritten and deleted data is reclaimed (memstore is RAM)
# --------------------------------------------------------------------------
def _overwrite_round(s3: Any, big: bytes, small: bytes) -> None:
    # a big object has a tail that its overwrite hands to the garbage
    # collector; many small writes are what grows the placement-group logs
    for _ in range(4):
        s3.put_object(Bucket=BUCKET, Key="reclaim/big", Body=big)
    for _ in range(40):
        for k in range(8):
            s3.put_object(Bucket=BUCKET, Key=f"reclaim/small-{k}", Body=small)


def _collected(rgw: RadosGateway) -> None:
    """Wait for the collector (it runs every few seconds), not for a time."""
    deadline = time.monotonic() + 300  # a hang guard, far beyond rgw gc processor period
    while rgw.gc_pending():
        assert time.monotonic() < deadline, "radosgw's garbage collector never ran"
        time.sleep(0.5)


def test_overwrites_do_not_grow_the_osd(rgw, role_arn):  # role_arn: the buckets exist
    s3 = rgw.client("s3")
    big, small = os.urandom(6 << 20), os.urandom(16 << 10)
    _overwrite_round(s3, big, small)  # the first round fills the logs to their bound
    _collected(rgw)
    before = rgw.osd_memory_pools()
    for _ in range(2):
        _overwrite_round(s3, big, small)
    _collected(rgw)
    after = rgw.osd_memory_pools()
    # 656 more writes of the same keys: the OSD keeps what it kept (the
    # defaults, with thousands of log entries per PG, grow it by MiBs)
    grown = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
    assert after["total"] - before["total"] < 512 << 10, grown
