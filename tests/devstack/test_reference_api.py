"""The reference TerrAPI server against its spec and the platform's rules.

Runs on the session's ``local_platform`` (and ``short_lived_platform`` for the
expiry tests): real IdP tokens, real radosgw STS credentials.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import boto3
import jwt
import pytest
import requests
import schemathesis
from botocore.config import Config
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from sts_bridge_devstack.keys import generate_signing_jwk
from sts_bridge_devstack.platform import LocalPlatform

pytestmark = pytest.mark.integration

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi" / "terrapi.yaml"
SERVICE_WS = "gep-processing-results-a2s-service-workspace"
PROBLEM = "application/problem+json"


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def platform(local_platform: LocalPlatform) -> LocalPlatform:
    return local_platform


@pytest.fixture(scope="module")
def service_token(platform: LocalPlatform) -> str:
    return platform.service_token()


@pytest.fixture(scope="module")
def alice_token(platform: LocalPlatform) -> str:
    return platform.user_token("alice")


@pytest.fixture(scope="module")
def bob_token(platform: LocalPlatform) -> str:
    return platform.user_token("bob")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def get(platform: LocalPlatform, path: str, token: str | None = None, **kw: Any) -> Any:
    headers = bearer(token) if token else {}
    return requests.get(platform.api_url + path, headers=headers, timeout=30, **kw)


def post(platform: LocalPlatform, path: str, token: str | None = None, **kw: Any) -> Any:
    headers = bearer(token) if token else {}
    return requests.post(platform.api_url + path, headers=headers, timeout=30, **kw)


def assert_problem(resp: Any, status: int, token: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["status"] == status
    assert body["detail"]
    if token:
        assert token not in resp.text
        assert token.split(".")[-1] not in resp.text
    return dict(body)


def s3_client(platform: LocalPlatform, sts: dict[str, Any]) -> Any:
    creds, storage = sts["credentials"], sts["storage"]
    return boto3.client(
        "s3",
        endpoint_url=storage["properties"]["service_url"][0],
        region_name=storage["properties"]["region"][0],
        aws_access_key_id=creds["access_key"],
        aws_secret_access_key=creds["secret_key"],
        aws_session_token=creds["token"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def forged_token(platform: LocalPlatform, claims: dict[str, Any], **overrides: Any) -> str:
    """``claims`` re-signed with a key the platform's IdP never published."""
    key = generate_signing_jwk("attacker")
    body = {**claims, **overrides}
    pem = jwt.algorithms.RSAAlgorithm.from_jwk(key)
    return jwt.encode(body, pem, algorithm="RS256", headers={"kid": key["kid"]})


# ------------------------------------------------------------------ schemathesis
def _schema(mode: GenerationMode) -> Any:
    schema = schemathesis.openapi.from_path(str(SPEC_PATH))
    # no example database: CI and a developer's machine generate the same cases
    schema.config.generation.update(modes=[mode], deterministic=True, database="none")
    return schema


valid_requests = _schema(GenerationMode.POSITIVE)
invalid_requests = _schema(GenerationMode.NEGATIVE)
CASE_SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


@valid_requests.parametrize()
@CASE_SETTINGS
def test_every_response_conforms_to_the_spec(
    case: Any, platform: LocalPlatform, alice_token: str
) -> None:
    """Valid generated requests with a valid token: no 5xx, every status is
    documented, and every response matches its schema and content type."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    case.call_and_validate(
        base_url=platform.api_url,
        headers=bearer(alice_token),
        allow_redirects=False,
        checks=[
            not_a_server_error,
            status_code_conformance,
            response_schema_conformance,
            content_type_conformance,
        ],
    )


@invalid_requests.parametrize()
@CASE_SETTINGS
def test_invalid_requests_never_cause_a_server_error(
    case: Any, platform: LocalPlatform, alice_token: str
) -> None:
    """Invalid generated requests (bad parameters, bodies, even malformed
    headers that the HTTP server itself rejects): never a 5xx."""
    from schemathesis.checks import not_a_server_error

    case.call_and_validate(
        base_url=platform.api_url,
        headers=bearer(alice_token),
        allow_redirects=False,
        checks=[not_a_server_error],
    )


# ------------------------------------------------------------------ 401
def test_no_token_is_401(platform: LocalPlatform) -> None:
    body = assert_problem(get(platform, "/v2/storage/workspaces"), 401)
    assert "bearer" in body["detail"].lower()


def test_malformed_and_non_bearer_tokens_are_401(platform: LocalPlatform) -> None:
    assert_problem(get(platform, "/v2/user/info", "not-a-jwt"), 401, "not-a-jwt")
    resp = requests.get(
        platform.api_url + "/v2/user/info", headers={"Authorization": "Basic YTpi"}, timeout=10
    )
    assert_problem(resp, 401)


def test_foreign_issuer_and_foreign_key_are_401(
    platform: LocalPlatform, service_token: str
) -> None:
    claims = jwt.decode(service_token, options={"verify_signature": False})
    # same claims, our issuer, signed with a key the IdP does not publish
    forged = forged_token(platform, claims)
    body = assert_problem(get(platform, "/v2/storage/workspaces", forged), 401, forged)
    assert "key" in body["detail"]
    # another issuer altogether
    foreign = forged_token(platform, claims, iss="http://127.0.0.1:1/realms/evil")
    body = assert_problem(get(platform, "/v2/storage/workspaces", foreign), 401, foreign)
    assert "issuer" in body["detail"]
    # a real token with its payload tampered (signature no longer matches)
    h, _payload, s = service_token.split(".")
    other = jwt.utils.base64url_encode(
        jwt.api_jws.json.dumps({**claims, "preferred_username": "alice"}).encode()
    ).decode()
    tampered = f"{h}.{other}.{s}"
    body = assert_problem(get(platform, "/v2/storage/workspaces", tampered), 401, tampered)
    assert "signature" in body["detail"]


def test_expired_token_is_401(short_lived_platform: LocalPlatform) -> None:
    token = short_lived_platform.service_token()
    assert get(short_lived_platform, "/v2/storage/workspaces", token).status_code == 200
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, exp - time.time()) + 1.5)
    body = assert_problem(get(short_lived_platform, "/v2/storage/workspaces", token), 401, token)
    assert "expired" in body["detail"]


# ------------------------------------------------------------------ workspaces
def test_service_client_sees_the_seed_workspace(
    platform: LocalPlatform, service_token: str
) -> None:
    listing = get(platform, "/v2/storage/workspaces", service_token).json()
    assert [w["name"] for w in listing] == [SERVICE_WS]
    assert listing[0]["self"] == f"{platform.api_url}/v2/storage/workspaces/{SERVICE_WS}"
    ws = get(platform, f"/v2/storage/workspaces/{SERVICE_WS}", service_token).json()
    props = ws["properties"]
    assert props["bucket"] == ["gep-processing-results"]
    assert props["key"] == ["a2s/"]
    assert props["storage_url"] == ["s3://gep-processing-results/a2s/"]
    assert props["platform_id"] == ["gep"]
    assert props["service_url"] == [platform.s3_endpoint + "/"]
    assert ws["resource_uris"] == ["s3://gep-processing-results/a2s/"]
    assert ws["status"]["status_code"] == "OK"
    assert "s3:PutObject" in ws["scopes"]


def test_user_workspaces_private_and_group(platform: LocalPlatform, alice_token: str) -> None:
    names = [w["name"] for w in get(platform, "/v2/storage/workspaces", alice_token).json()]
    assert names == ["gep-alice-private-workspace", "gep-team-a-shared-workspace"]
    ws = get(platform, "/v2/storage/workspaces/gep-team-a-shared-workspace", alice_token).json()
    assert ws["properties"]["bucket"] == ["gep-shared"]
    assert ws["properties"]["key"] == ["team-a/"]


def test_someone_elses_workspace_is_403_unknown_is_404(
    platform: LocalPlatform, alice_token: str, service_token: str
) -> None:
    for path in (
        "/v2/storage/workspaces/gep-bob-private-workspace",
        "/v2/storage/workspaces/gep-team-b-shared-workspace",
        "/v2/storage/token?storagePointId=gep-bob-private-workspace",
        f"/v2/storage/token?storagePointId={SERVICE_WS}",
    ):
        assert_problem(get(platform, path, alice_token), 403, alice_token)
    assert_problem(
        get(platform, "/v2/storage/workspaces/gep-alice-private-workspace", service_token), 403
    )
    for path in (
        "/v2/storage/workspaces/gep-nobody-private-workspace",
        "/v2/storage/token?storagePointId=no-such-storage-point",
        "/v2/storage/sharedfolders/no-such-folder",
    ):
        assert_problem(get(platform, path, alice_token), 404, alice_token)
    assert_problem(post(platform, "/v2/storage/workspaces/nope/claim", alice_token), 404)
    assert (
        post(
            platform, "/v2/storage/workspaces/gep-alice-private-workspace/claim", alice_token
        ).status_code
        == 202
    )


def test_user_info_and_platforms(platform: LocalPlatform, alice_token: str) -> None:
    resp = get(platform, "/v2/user/info", alice_token)
    assert resp.status_code == 200
    assert alice_token not in resp.text
    info = resp.json()
    assert info["name"] == "alice"
    assert "tokens" not in info
    claims = {(c["type"], c["value"]) for c in info["claims"]}
    assert ("preferred_username", "alice") in claims
    assert ("groups", "team-a") in claims
    assert get(platform, "/v2/user/platforms", alice_token).json() == {"gep": {"id": "gep"}}


# ------------------------------------------------------------------ STS
@pytest.mark.requires_radosgw("the s3:prefix condition on ListBucket")
def test_sts_credentials_are_confined_to_the_workspace(
    platform: LocalPlatform, alice_token: str
) -> None:
    before = platform.api_stats()["sts_exchanges"]
    sts = get(
        platform, "/v2/storage/token?storagePointId=gep-alice-private-workspace", alice_token
    ).json()
    assert platform.api_stats()["sts_exchanges"] == before + 1
    creds = sts["credentials"]
    assert creds["use_token"] is True and creds["token"] and creds["expiration"]
    assert sts["storage"]["name"] == "gep-alice-private-workspace"
    s3 = s3_client(platform, sts)
    key = f"alice/{uuid.uuid4().hex}.txt"
    s3.put_object(Bucket="gep-workspaces", Key=key, Body=b"inside")
    assert s3.get_object(Bucket="gep-workspaces", Key=key)["Body"].read() == b"inside"
    listed = s3.list_objects_v2(Bucket="gep-workspaces", Prefix="alice/")
    assert key in [o["Key"] for o in listed.get("Contents", [])]
    for bucket, other in (
        ("gep-workspaces", "bob/intruder.txt"),
        ("gep-workspaces", "alicex/intruder.txt"),
        ("gep-processing-results", "a2s/intruder.txt"),
    ):
        with pytest.raises(ClientError) as err:
            s3.put_object(Bucket=bucket, Key=other, Body=b"outside")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as err:
        s3.list_objects_v2(Bucket="gep-workspaces", Prefix="bob/")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


@pytest.mark.requires_radosgw("session policies")
def test_workspace_credentials_cannot_list_in_progress_uploads(
    platform: LocalPlatform, alice_token: str, bob_token: str
) -> None:
    def creds(token: str, workspace: str) -> Any:
        path = f"/v2/storage/token?storagePointId={workspace}"
        return s3_client(platform, get(platform, path, token).json())

    alice = creds(alice_token, "gep-alice-private-workspace")
    bob = creds(bob_token, "gep-bob-private-workspace")
    key = f"alice/{uuid.uuid4().hex}.bin"
    upload_id = alice.create_multipart_upload(Bucket="gep-workspaces", Key=key)["UploadId"]
    try:
        # the owner finds her upload again by its id (sts-bridge resumes this way)
        alice.upload_part(
            Bucket="gep-workspaces", Key=key, UploadId=upload_id, PartNumber=1, Body=b"x"
        )
        parts = alice.list_parts(Bucket="gep-workspaces", Key=key, UploadId=upload_id)
        assert [p["PartNumber"] for p in parts["Parts"]] == [1]
        # nobody lists the bucket's uploads: radosgw cannot confine that to a prefix
        for who, prefix in ((bob, "alice/"), (bob, ""), (bob, "a"), (bob, "bob/"), (alice, "")):
            with pytest.raises(ClientError) as err:
                who.list_multipart_uploads(Bucket="gep-workspaces", Prefix=prefix)
            assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, prefix
        with pytest.raises(ClientError) as err:
            bob.list_multipart_uploads(Bucket="gep-workspaces")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError) as err:  # nor someone else's parts
            bob.list_parts(Bucket="gep-workspaces", Key=key, UploadId=upload_id)
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    finally:
        alice.abort_multipart_upload(Bucket="gep-workspaces", Key=key, UploadId=upload_id)


def test_default_storage_point_is_the_private_workspace(
    platform: LocalPlatform, alice_token: str
) -> None:
    sts = get(platform, "/v2/storage/token", alice_token).json()
    assert sts["storage"]["name"] == "gep-alice-private-workspace"


@pytest.mark.requires_radosgw("credential expiry")
def test_sts_credentials_stop_working_after_their_lifetime(
    short_lived_platform: LocalPlatform,
) -> None:
    token = short_lived_platform.service_token()
    sts = get(short_lived_platform, f"/v2/storage/token?storagePointId={SERVICE_WS}", token).json()
    s3 = s3_client(short_lived_platform, sts)
    s3.put_object(Bucket="gep-processing-results", Key="a2s/short.txt", Body=b"1")
    time.sleep(short_lived_platform.sts_duration + 1.5)
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket="gep-processing-results", Key="a2s/short.txt", Body=b"2")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


# ------------------------------------------------------------------ download
@pytest.mark.requires_radosgw("presigned URLs")
def test_download_links(platform: LocalPlatform, service_token: str) -> None:
    sts = get(platform, f"/v2/storage/token?storagePointId={SERVICE_WS}", service_token).json()
    s3_client(platform, sts).put_object(
        Bucket="gep-processing-results", Key="a2s/dl/hello.txt", Body=b"hello"
    )
    target = "s3://gep-processing-results/a2s/dl/hello.txt"
    resp = post(
        platform, "/v2/storage/download", service_token, params={"url": target, "redirect": "false"}
    )
    assert resp.status_code == 200, resp.text
    link = resp.json()["url"]
    assert requests.get(link, timeout=10).content == b"hello"
    # redirect=true (the default): 302 to a working link
    resp = post(
        platform,
        "/v2/storage/download",
        service_token,
        params={"url": target},
        allow_redirects=False,
    )
    assert resp.status_code == 302
    assert requests.get(resp.headers["Location"], timeout=10).content == b"hello"
    # the http URL of the object works as well
    http_url = f"{platform.s3_endpoint}/gep-processing-results/a2s/dl/hello.txt"
    resp = post(
        platform,
        "/v2/storage/download",
        service_token,
        params={"url": http_url, "redirect": "false"},
    )
    assert resp.status_code == 200
    # a tampered link is refused by the store
    parts = urlsplit(link)
    query = dict(parse_qsl(parts.query))
    sig = query["X-Amz-Signature"]
    query["X-Amz-Signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    tampered = urlunsplit(parts._replace(query=urlencode(query)))
    assert requests.get(tampered, timeout=10).status_code == 403
    other_key = link.replace("/a2s/dl/hello.txt", "/a2s/dl/other.txt")
    assert requests.get(other_key, timeout=10).status_code == 403
    # outside the principal's storage: 403; no url: 400
    resp = post(
        platform,
        "/v2/storage/download",
        service_token,
        params={"url": "s3://gep-workspaces/alice/x", "redirect": "false"},
    )
    assert_problem(resp, 403)
    resp = post(
        platform,
        "/v2/storage/download",
        service_token,
        params={"url": "s3://gep-processing-results/a2s/../b/x", "redirect": "false"},
    )
    assert_problem(resp, 403)
    assert_problem(post(platform, "/v2/storage/download", service_token), 400)
    # not the platform's storage: returned unchanged
    resp = post(
        platform,
        "/v2/storage/download",
        service_token,
        params={"url": "https://example.org/f.tif", "redirect": "false"},
    )
    assert resp.json()["url"] == "https://example.org/f.tif"


# ------------------------------------------------------------------ shared folders
def test_shared_folder_lifecycle(platform: LocalPlatform, alice_token: str, bob_token: str) -> None:
    ws = "gep-alice-private-workspace"
    resp = post(
        platform,
        f"/v2/storage/workspaces/{ws}/share",
        alice_token,
        json={"path": "results/run-1/", "users": ["bob"], "groups": []},
    )
    assert resp.status_code == 201, resp.text
    folder = resp.json()
    name = folder["name"]
    assert folder["type"] == "urn:resource:storage:sharedfolder"
    assert folder["properties"]["key"] == ["alice/results/run-1/"]
    # alice writes into the shared sub-prefix with her workspace credentials
    sts = get(platform, f"/v2/storage/token?storagePointId={ws}", alice_token).json()
    s3_client(platform, sts).put_object(
        Bucket="gep-workspaces", Key="alice/results/run-1/out.txt", Body=b"shared"
    )
    # bob sees it, reads it, cannot write nor read the rest of alice's workspace
    assert name in [f["name"] for f in get(platform, "/v2/storage/sharedfolders", bob_token).json()]
    assert get(platform, f"/v2/storage/sharedfolders/{name}", bob_token).status_code == 200
    sts_bob = get(platform, f"/v2/storage/token?storagePointId={name}", bob_token).json()
    s3_bob = s3_client(platform, sts_bob)
    body = s3_bob.get_object(Bucket="gep-workspaces", Key="alice/results/run-1/out.txt")["Body"]
    assert body.read() == b"shared"
    with pytest.raises(ClientError):
        s3_bob.put_object(Bucket="gep-workspaces", Key="alice/results/run-1/bob.txt", Body=b"x")
    with pytest.raises(ClientError):
        s3_bob.get_object(Bucket="gep-workspaces", Key="alice/secret.txt")
    # escaping the workspace is refused; bob may not share alice's workspace
    resp = post(
        platform, f"/v2/storage/workspaces/{ws}/share", alice_token, json={"path": "../bob/"}
    )
    assert_problem(resp, 403)
    resp = post(platform, f"/v2/storage/workspaces/{ws}/share", bob_token, json={"path": "x/"})
    assert_problem(resp, 403)
    # only alice may delete; afterwards it is gone for bob
    assert_problem(
        requests.delete(
            f"{platform.api_url}/v2/storage/sharedfolders/{name}",
            headers=bearer(bob_token),
            timeout=10,
        ),
        403,
    )
    resp = requests.delete(
        f"{platform.api_url}/v2/storage/sharedfolders/{name}",
        headers=bearer(alice_token),
        timeout=10,
    )
    assert resp.status_code == 202 and resp.json()["resource"] == name
    assert_problem(get(platform, f"/v2/storage/sharedfolders/{name}", bob_token), 404)


# ------------------------------------------------------------------ counting
@pytest.mark.requires_radosgw("S3 validates the web identity token against the IdP")
def test_stats_count_operations_and_reset(platform: LocalPlatform, alice_token: str) -> None:
    platform.reset_stats()
    get(platform, "/v2/storage/workspaces", alice_token)
    get(platform, "/v2/storage/workspaces", alice_token)
    get(platform, "/v2/storage/token", alice_token)
    stats = platform.api_stats()
    assert stats["by_operation"] == {"get_workspaces": 2, "get_storage_sts": 1}
    assert stats["sts_exchanges"] == 1
    assert stats["total"] == 3
    assert platform.idp_stats()["total"] >= 1  # radosgw fetched discovery / JWKS
    assert alice_token not in platform.api_log()


def test_control_characters_in_a_path_are_a_400_problem(
    platform: LocalPlatform, alice_token: str
) -> None:
    # found by schemathesis: a "\n" in a workspace id used to be a 500
    for path in ("/v2/storage/workspaces/%0Aabc", "/v2/storage/sharedfolders/a%07b%0D"):
        assert_problem(get(platform, path, alice_token), 400)


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "sts_bridge_devstack.api", "--help"],  # the server `make devstack` starts
        ["-c", "import fastapi.testclient"],  # the tests' TestClient
    ],
    ids=["api-server", "fastapi-testclient"],
)
def test_starts_without_a_warning(argv: list[str]) -> None:
    # starlette's TestClient (connexion imports it) warns on import unless
    # httpx2 is installed: a warning every user of the platform would see
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, "")
