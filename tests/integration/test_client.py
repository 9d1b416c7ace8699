"""Client / Workspace / CLI against the real local platform (IdP, TerrAPI, radosgw)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from sts_bridge import Client, PermissionDeniedError, WorkspaceNotFoundError

pytestmark = pytest.mark.integration

SERVICE_WS = "gep-processing-results-a2s-service-workspace"


def test_seed_style_direct_usage_still_works(local_platform: Any) -> None:
    """The seed notebook's code, with only the import name and URLs changed."""
    import boto3
    import terrapi_client

    configuration = terrapi_client.Configuration(host=local_platform.api_url)
    configuration.access_token = local_platform.service_token()
    with terrapi_client.ApiClient(configuration) as api_client:
        api = terrapi_client.StorageApi(api_client)
        workspaces = api.get_workspaces()
        workspace = next(filter(lambda x: x.name == SERVICE_WS, workspaces))
        token = api.get_storage_sts(workspace.name)
    props = token.storage.properties
    session = boto3.session.Session(
        aws_access_key_id=token.credentials.access_key,
        aws_secret_access_key=token.credentials.secret_key,
        aws_session_token=token.credentials.token,
        region_name=props["region"][0] if "region" in props else "us-east-1",
    )
    s3 = session.client("s3", endpoint_url=props["service_url"][0])
    response = s3.list_objects_v2(Bucket=props["bucket"][0], Prefix=props["key"][0])
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_default_workspace_put_list_get(platform_env: dict[str, str]) -> None:
    client = Client.from_env()
    assert SERVICE_WS in client.workspaces()
    ws = client.workspace()
    assert (ws.name, ws.bucket, ws.prefix) == (SERVICE_WS, "gep-processing-results", "a2s/")
    key = f"{ws.prefix}it-{uuid.uuid4().hex}.txt"
    s3 = ws.s3_client()
    s3.put_object(Bucket=ws.bucket, Key=key, Body=b"hello")
    listed = s3.list_objects_v2(Bucket=ws.bucket, Prefix=key)
    assert [o["Key"] for o in listed.get("Contents", [])] == [key]
    assert s3.get_object(Bucket=ws.bucket, Key=key)["Body"].read() == b"hello"
    s3.delete_object(Bucket=ws.bucket, Key=key)


def test_someone_elses_workspace_is_403(platform_env: dict[str, str]) -> None:
    with pytest.raises(PermissionDeniedError) as info:
        Client.from_env().workspace("gep-alice-private-workspace")
    assert "gep-alice-private-workspace" in str(info.value)
    assert info.value.status == 403


def test_unknown_workspace_is_404_with_suggestion(platform_env: dict[str, str]) -> None:
    with pytest.raises(WorkspaceNotFoundError) as info:
        Client.from_env().workspace("gep-processing-results-a2s-service-workspac")
    assert info.value.suggestion == SERVICE_WS
    assert SERVICE_WS in info.value.available


_CHILD = (
    "from sts_bridge import Client; "
    f"ws = Client.from_env().workspace({SERVICE_WS!r}); "
    "print(ws.bucket, ws.credentials().access_key)"
)


def test_warm_second_process_makes_no_api_or_idp_call(
    platform_env: dict[str, str], local_platform: Any
) -> None:
    env = dict(os.environ)
    first = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    local_platform.reset_stats()
    second = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert local_platform.api_stats()["total"] == 0
    assert local_platform.idp_stats()["total"] == 0


def test_four_cold_processes_make_one_exchange(
    platform_env: dict[str, str], local_platform: Any
) -> None:
    env = dict(os.environ)
    # log in once so that only the STS exchange is contended
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from sts_bridge import Client; Client.from_env().credentials.token()",
        ],
        env=env,
        check=True,
    )
    local_platform.reset_stats()
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.communicate()[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1
    assert local_platform.api_stats()["sts_exchanges"] == 1


def test_cli_workspace_shows_no_credentials(platform_env: dict[str, str]) -> None:
    from sts_bridge.cli import main

    assert main(["workspaces", "--json"]) == 0
    out = subprocess.run(
        [sys.executable, "-m", "sts_bridge", "workspace", SERVICE_WS, "--json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["bucket"] == "gep-processing-results" and info["prefix"] == "a2s/"
    ws = Client.from_env().workspace(SERVICE_WS)
    creds = ws.credentials()
    assert creds.secret_key not in out.stdout and creds.access_key not in out.stdout
    assert creds.token is None or creds.token not in out.stdout
