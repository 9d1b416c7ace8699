"""Workspace credentials for other tools, against the real local platform:
the AWS CLI through credential_process, s5cmd through env, a delegated child
through the container-credentials endpoint, obstore through its provider."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cli_support import Cli, cli_environment

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools-venv" / "bin"


def _tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup` (tools-deps)")
    return str(path)


@pytest.fixture
def workspace_info(run_cli: Cli) -> dict[str, Any]:
    proc = run_cli(["credentials", "--format", "json"])
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_json_format_describes_the_workspace(workspace_info: dict[str, Any]) -> None:
    assert workspace_info["workspace"] == "gep-processing-results-a2s-service-workspace"
    assert workspace_info["bucket"] == "gep-processing-results"
    assert workspace_info["prefix"] == "a2s/"
    assert workspace_info["session_token"]
    assert workspace_info["expiration"].endswith("Z")


def test_credential_process_output_is_the_aws_protocol(run_cli: Cli) -> None:
    proc = run_cli(["credentials", "--format", "credential-process"])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["Version"] == 1
    assert set(doc) == {"Version", "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}
    # talk never goes to stdout: the AWS SDKs parse it
    assert proc.stdout.count("\n") == 1


def _exists(platform: Any, bucket: str, key: str) -> bool:
    """Ask radosgw with the admin keys (not the workspace's) whether a key exists."""
    admin = platform.s3.client("s3")
    return bool(admin.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0))


def test_aws_cli_through_credential_process(
    local_platform: Any,
    cli_env: dict[str, str],
    workspace_info: dict[str, Any],
    tmp_path: Path,
) -> None:
    env = dict(cli_env)
    config = tmp_path / "aws-config"
    command = (
        f"{sys.executable} -m sts_bridge credentials {workspace_info['workspace']}"
        " --format credential-process"
    )
    config.write_text(f"[profile workspace]\nregion = us-east-1\ncredential_process = {command}\n")
    env.update(
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_PROFILE="workspace",
    )
    source = tmp_path / "hello.txt"
    source.write_bytes(b"hello from the aws cli\n")
    bucket, prefix = workspace_info["bucket"], workspace_info["prefix"]
    endpoint = workspace_info["endpoint_url"]
    key = f"{prefix}aws-cli/{uuid.uuid4().hex}.txt"

    inside = subprocess.run(
        [_tool("aws"), "s3", "cp", str(source), f"s3://{bucket}/{key}", "--endpoint-url", endpoint],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inside.returncode == 0, inside.stderr
    back = subprocess.run(
        [_tool("aws"), "s3", "cp", f"s3://{bucket}/{key}", "-", "--endpoint-url", endpoint],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert back.stdout == "hello from the aws cli\n"

    elsewhere = f"elsewhere/{uuid.uuid4().hex}"
    outside = subprocess.run(
        [
            _tool("aws"),
            "s3",
            "cp",
            str(source),
            f"s3://{bucket}/{elsewhere}",
            "--endpoint-url",
            endpoint,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert outside.returncode != 0
    # radosgw answers AccessDenied with an empty <Message/>, on which awscli
    # 1.46's error decorator crashes ("argument of type 'NoneType' ..."), so
    # check the effect rather than the CLI's wording.
    assert "upload failed" in outside.stderr
    assert _exists(local_platform, bucket, key)
    assert not _exists(local_platform, bucket, elsewhere)


def test_s5cmd_through_env(
    local_platform: Any,
    run_cli: Cli,
    workspace_info: dict[str, Any],
    tmp_path: Path,
) -> None:
    env = run_cli.env
    proc = run_cli(["credentials", "--format", "env"])
    assert proc.returncode == 0, proc.stderr
    exported = {}
    for line in proc.stdout.splitlines():
        assert line.startswith("export ")
        name, _, value = line[len("export ") :].partition("=")
        exported[name] = value.strip("'")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} <= set(exported)
    # Run s5cmd the way `eval "$(sts-bridge credentials --format env)"` would.
    shell = f'eval "$({sys.executable} -m sts_bridge credentials --format env)" && exec "$@"'
    source = tmp_path / "s5.txt"
    source.write_bytes(b"hello from s5cmd\n")
    bucket, prefix = workspace_info["bucket"], workspace_info["prefix"]
    endpoint = workspace_info["endpoint_url"]

    def s5cmd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", shell, "s5cmd", _tool("s5cmd"), "--endpoint-url", endpoint, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    key = f"{prefix}s5cmd/{uuid.uuid4().hex}.txt"
    inside = s5cmd("cp", str(source), f"s3://{bucket}/{key}")
    assert inside.returncode == 0, inside.stderr + inside.stdout
    listed = s5cmd("ls", f"s3://{bucket}/{key}")
    assert key.rsplit("/", 1)[1] in listed.stdout
    elsewhere = f"elsewhere/{uuid.uuid4().hex}.txt"
    outside = s5cmd("cp", str(source), f"s3://{bucket}/{elsewhere}")
    assert outside.returncode != 0
    assert "AccessDenied" in (outside.stderr + outside.stdout)
    assert not _exists(local_platform, bucket, elsewhere)


CHILD = textwrap.dedent(
    """
    import os, sys, time, boto3
    # the child knows only the endpoint: no user token, no client secret
    assert "TERRAPI_CLIENT_SECRET" not in os.environ
    assert "AWS_SECRET_ACCESS_KEY" not in os.environ
    bucket, prefix, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"])
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        s3.put_object(Bucket=bucket, Key=f"{prefix}child/{n}.txt", Body=b"x")
        n += 1
        time.sleep(0.2)
    print(n)
    """
)


def test_delegated_child_outlives_three_credential_lifetimes(
    short_lived_platform: Any, short_lived_platform_env: dict[str, str], tmp_path: Path
) -> None:
    env = cli_environment(short_lived_platform_env, tmp_path)
    lifetime = short_lived_platform.sts_duration
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    short_lived_platform.reset_stats()
    seconds = 3.5 * lifetime
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sts_bridge",
            "credentials",
            "--serve",
            "--",
            sys.executable,
            str(child),
            "gep-processing-results",
            "a2s/",
            str(seconds),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started > 3 * lifetime
    puts = int(proc.stdout.strip().splitlines()[-1])
    assert puts >= 3 * lifetime  # ~5 puts a second, none failed
    exchanges = short_lived_platform.api_stats()["sts_exchanges"]
    # one exchange per lifetime (plus the first), not one per request
    assert 3 <= exchanges <= puts // 2


def test_container_endpoint_refuses_a_wrong_token(platform_env: dict[str, str]) -> None:
    import urllib.error
    import urllib.request

    import sts_bridge
    from sts_bridge.interop.container_credentials import ContainerCredentialsServer

    ws = sts_bridge.Client.from_env().workspace()
    with ContainerCredentialsServer(ws) as server:
        request = urllib.request.Request(server.url, headers={"Authorization": "wrong"})
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            urllib.request.urlopen(request, timeout=10)
        assert excinfo.value.code == 403
        good = urllib.request.Request(
            server.url, headers={"Authorization": server.env()["AWS_CONTAINER_AUTHORIZATION_TOKEN"]}
        )
        with urllib.request.urlopen(good, timeout=10) as response:
            doc = json.loads(response.read())
        assert {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"} <= set(doc)
        assert server.env()["AWS_CONTAINER_AUTHORIZATION_TOKEN"] not in repr(server)


def test_obstore_provider_refreshes(
    short_lived_platform: Any, short_lived_platform_env: dict[str, str]
) -> None:
    obstore = pytest.importorskip("obstore")
    from obstore.store import S3Store

    import sts_bridge
    from sts_bridge.interop.tool_credentials import obstore_credential_provider

    ws = sts_bridge.Client.from_env().workspace()
    store = S3Store(
        ws.bucket,
        prefix=ws.prefix.rstrip("/"),
        endpoint=ws.endpoint_url,
        region=ws.region,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
        credential_provider=obstore_credential_provider(ws),
    )
    deadline = time.monotonic() + 2.5 * short_lived_platform.sts_duration
    n = 0
    while time.monotonic() < deadline:
        obstore.put(store, f"obstore/{n}.txt", b"payload")
        assert bytes(obstore.get(store, f"obstore/{n}.txt").bytes()) == b"payload"
        n += 1
        time.sleep(0.25)
    assert n >= 8
