"""The moto S3 fallback of the local platform (issue 3, the fallback clause).

Runs in CI too, on purpose: it starts ``LocalPlatform(s3_backend="moto")``
explicitly, to test the fallback itself (the other tests run on radosgw in CI).
"""

from __future__ import annotations

import io
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from sts_bridge_devstack.platform import LocalPlatform, PlatformError, resolve_s3_backend
from sts_bridge_devstack.pytest_plugin import require_platform

pytestmark = pytest.mark.integration

SERVICE_WS = "gep-processing-results-a2s-service-workspace"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def moto_platform(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_platform("moto")
    warn = io.StringIO()
    platform = LocalPlatform(
        s3_backend="moto", warn=warn, workdir=tmp_path_factory.mktemp("moto-platform")
    )
    platform.start()
    try:
        yield platform, warn.getvalue()
    finally:
        platform.stop()


def test_warning_lists_the_lost_guarantees(moto_platform: Any) -> None:
    platform, warning = moto_platform
    assert platform.s3_backend == "moto"
    assert warning == platform.fallback_warning + "\n"
    text = warning.lower()
    assert "moto" in text and "fallback" in text
    for lost in (
        "expiry is not enforced",
        "session policies",
        "conditions",
        "presigned urls answer http 500",
        "web identity tokens are not validated",
        "buffered in ram",
    ):
        assert lost in text, f"the warning does not mention {lost!r}:\n{warning}"


def test_service_client_gets_credentials_confined_to_its_prefix(moto_platform: Any) -> None:
    platform, _ = moto_platform
    token = platform.service_token()
    resp = requests.get(
        f"{platform.api_url}/v2/storage/token",
        params={"storagePointId": SERVICE_WS},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    creds, storage = doc["credentials"], doc["storage"]
    assert storage["name"] == SERVICE_WS
    assert creds["use_token"] is True and creds["token"] and creds["expiration"]
    assert creds["access_key"].startswith("ASIA")  # STS session keys, not the admin's
    assert creds["access_key"] != platform.s3.admin_access_key
    bucket, prefix = storage["properties"]["bucket"][0], storage["properties"]["key"][0]
    assert (bucket, prefix) == ("gep-processing-results", "a2s/")

    s3 = platform.s3.client("s3", creds["access_key"], creds["secret_key"], creds["token"])
    key = f"{prefix}{uuid.uuid4().hex}.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"inside")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"inside"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert key in [o["Key"] for o in listed.get("Contents", [])]
    # outside the prefix, in another bucket: denied by the role's inline policy
    for other_bucket, other_key in ((bucket, "elsewhere/x.txt"), ("gep-workspaces", "a2s/x.txt")):
        with pytest.raises(ClientError) as err:
            s3.put_object(Bucket=other_bucket, Key=other_key, Body=b"outside")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # the session token is checked, and so is the secret
    no_token = platform.s3.client("s3", creds["access_key"], creds["secret_key"])
    wrong_secret = platform.s3.client("s3", creds["access_key"], "x" * 40, creds["token"])
    for client in (no_token, wrong_secret):
        with pytest.raises(ClientError) as err:
            client.put_object(Bucket=bucket, Key=key, Body=b"again")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_the_sdk_workspace_works_on_the_fallback(
    moto_platform: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sts_bridge

    platform, _ = moto_platform
    for name in list(os.environ):
        if name.startswith(("TERRAPI_", "STS_BRIDGE_")):
            monkeypatch.delenv(name, raising=False)
    for name, value in platform.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STS_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    ws = sts_bridge.Client.from_env().workspace(SERVICE_WS)
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(1 << 16))
    ws.upload(source, "moto/in.bin")
    out = ws.download("moto/in.bin", tmp_path / "out.bin")
    assert Path(out).read_bytes() == source.read_bytes()


def test_user_token_is_verified_by_the_api_not_by_moto(moto_platform: Any) -> None:
    platform, _ = moto_platform
    token = platform.service_token()
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    resp = requests.get(
        f"{platform.api_url}/v2/storage/token",
        params={"storagePointId": SERVICE_WS},
        headers={"Authorization": f"Bearer {tampered}"},
        timeout=30,
    )
    assert resp.status_code == 401


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(PlatformError, match="unknown S3 backend"):
        resolve_s3_backend("minio")


def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    require_platform("moto")
    platform = LocalPlatform(s3_backend="moto", warn=io.StringIO(), workdir=tmp_path)
    platform.start()
    try:
        assert platform.s3 is not None and platform.idp is not None
        pids = [platform._api.pid, platform.idp.pid, platform.s3.pid]  # type: ignore[union-attr]
        pids = [p for p in pids if p]
        assert len(pids) == 3
        dirs = [platform.workdir, platform.s3.workdir, platform.idp.workdir]
    finally:
        platform.stop()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], "processes left behind"
    assert not [d for d in dirs if d is not None and Path(d).exists()], "temp folders left"
