"""``sts-bridge credentials --serve -- CMD`` as the zero-code route, against
the real local platform: the child has an AWS configuration of its own (a
hostile personal ``[default]`` cannot win), writes with boto3, pyarrow and
GDAL, and its sts-bridge uses the served credentials, never the parent's
login."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def hostile_env(platform_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The parent's environment: a logged-in platform config, plus a HOME whose
    ``~/.aws`` holds a wrong ``[default]`` and static keys in the environment."""
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = AKIAHOSTILE\naws_secret_access_key = hostile\n"
    )
    (home / ".aws" / "config").write_text("[default]\nregion = eu-hostile-1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "CPL_"))}
    env.update(platform_env)
    env["HOME"] = str(home)
    env["STS_BRIDGE_CONFIG_FILE"] = str(tmp_path / "no-config")
    env["AWS_ACCESS_KEY_ID"] = "AKIAHOSTILEENV"
    env["AWS_SECRET_ACCESS_KEY"] = "hostile-env"
    return env


def _serve(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sts_bridge", "credentials", "--serve", "--", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


CHILD = textwrap.dedent(
    """
    import json, os, sys
    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs

    run = sys.argv[1]
    bucket, _, prefix = os.environ["STS_BRIDGE_S3_URI"][len("s3://"):].partition("/")
    s3 = boto3.client("s3")  # endpoint, region, credentials: all from the environment
    s3.put_object(Bucket=bucket, Key=f"{prefix}{run}/boto3.txt", Body=b"from boto3")
    endpoint = os.environ["AWS_ENDPOINT_URL_S3"]
    scheme, _, host = endpoint.partition("://")
    arrow = fs.S3FileSystem(endpoint_override=host, scheme=scheme)
    table = pa.table({"x": list(range(1000))})
    pq.write_table(table, f"{bucket}/{prefix}{run}/arrow.parquet", filesystem=arrow)
    back = pq.read_table(f"{bucket}/{prefix}{run}/arrow.parquet", filesystem=arrow)
    assert back.equals(table)
    # GDAL (rasterio's wheel) through the same endpoint: a COG written and read
    import numpy as np
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile

    pixels = np.arange(128 * 128, dtype="uint16").reshape(128, 128)
    cog = f"/vsis3/{bucket}/{prefix}{run}/gdal.tif"
    with MemoryFile() as memory:
        with memory.open(driver="GTiff", width=128, height=128, count=1, dtype="uint16") as tmp:
            tmp.write(pixels, 1)
        with memory.open() as src:
            rasterio.shutil.copy(src, cog, driver="COG")
    with rasterio.open(cog) as src:
        assert (src.read(1) == pixels).all()
    names = [
        "STS_BRIDGE_WORKSPACE", "STS_BRIDGE_WORKSPACE_URL", "STS_BRIDGE_S3_URI",
        "AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING", "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE", "AWS_REQUEST_CHECKSUM_CALCULATION",
    ]
    seen = {name: os.environ.get(name) for name in names}
    config_dir = os.path.dirname(os.environ["AWS_CONFIG_FILE"])
    seen["config_dir_mode"] = oct(os.stat(config_dir).st_mode & 0o777)
    seen["secret_in_env"] = any(
        n in os.environ for n in ("AWS_SECRET_ACCESS_KEY", "TERRAPI_CLIENT_SECRET", "TERRAPI_TOKEN")
    )
    print(json.dumps(seen))
    """
)


def test_child_writes_with_boto3_pyarrow_and_gdal_despite_a_hostile_default(
    local_platform: Any, hostile_env: dict[str, str], tmp_path: Path
) -> None:
    pytest.importorskip("pyarrow")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    run = f"serve/{uuid.uuid4().hex}"
    proc = _serve(hostile_env, sys.executable, str(script), run)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    workspace = "gep-processing-results-a2s-service-workspace"
    assert seen["STS_BRIDGE_WORKSPACE"] == workspace
    assert seen["STS_BRIDGE_WORKSPACE_URL"] == f"workspace://{workspace}/"
    assert seen["STS_BRIDGE_S3_URI"] == "s3://gep-processing-results/a2s/"
    assert seen["AWS_HTTPS"] == "NO" and seen["AWS_VIRTUAL_HOSTING"] == "FALSE"
    assert seen["AWS_S3_ENDPOINT"] and "://" not in seen["AWS_S3_ENDPOINT"]
    assert seen["AWS_REQUEST_CHECKSUM_CALCULATION"] == "WHEN_REQUIRED"
    assert seen["config_dir_mode"] == "0o700"
    assert seen["secret_in_env"] is False
    # the private AWS files are gone with the command
    assert not Path(seen["AWS_CONFIG_FILE"]).exists()
    admin = local_platform.s3.client("s3")
    listed = admin.list_objects_v2(Bucket="gep-processing-results", Prefix=f"a2s/{run}/")
    assert {o["Key"] for o in listed.get("Contents", [])} == {
        f"a2s/{run}/boto3.txt",
        f"a2s/{run}/arrow.parquet",
        f"a2s/{run}/gdal.tif",
    }


def test_child_sts_bridge_token_refuses(hostile_env: dict[str, str]) -> None:
    # the parent is logged in (a client secret and a token cache it can use)
    direct = subprocess.run(
        [sys.executable, "-m", "sts_bridge", "token"],
        env=hostile_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert direct.returncode == 0 and direct.stdout.strip()
    proc = _serve(hostile_env, sys.executable, "-m", "sts_bridge", "token")
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == ""
    assert "credentials --serve" in proc.stderr and "never your login" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert direct.stdout.strip() not in proc.stderr


def test_child_sts_bridge_ls_uses_the_served_credentials(
    local_platform: Any, hostile_env: dict[str, str], platform_env: dict[str, str]
) -> None:
    name = f"serve-ls/{uuid.uuid4().hex}.txt"
    admin = local_platform.s3.client("s3")
    admin.put_object(Bucket="gep-processing-results", Key=f"a2s/{name}", Body=b"listed")
    local_platform.reset_stats()
    proc = _serve(hostile_env, sys.executable, "-m", "sts_bridge", "ls", "serve-ls/", "--json")
    assert proc.returncode == 0, proc.stderr
    keys = [json.loads(line)["key"] for line in proc.stdout.splitlines()]
    assert name in keys
    # one STS exchange: the parent's (the child asked the served endpoint)
    assert local_platform.api_stats()["sts_exchanges"] <= 1
    other = _serve(
        hostile_env, sys.executable, "-m", "sts_bridge", "ls", "-w", "gep-alice-private-workspace"
    )
    assert other.returncode == 3
    assert "only use the served workspace" in other.stderr


CHILD_FILESYSTEM = textwrap.dedent(
    """
    import json, os, sys
    import fsspec

    run = sys.argv[1]
    served = os.environ["STS_BRIDGE_WORKSPACE"]
    fs = fsspec.filesystem("workspace")
    with fsspec.open(f"workspace://{served}/{run}/a.txt", "wb") as f:
        f.write(b"through the served credentials")
    seen = {
        "workspaces": fs.ls("", detail=False),
        "listed": fs.ls(f"{served}/{run}", detail=False),
        "read": fs.cat_file(f"workspace://{served}/{run}/a.txt").decode(),
        "other_exists": fs.exists("workspace://gep-alice-private-workspace/x"),
    }
    try:
        fs.ls("gep-alice-private-workspace")
    except FileNotFoundError as exc:
        seen["other_ls"] = str(exc)
    fs.rm(f"{served}/{run}", recursive=True)
    print(json.dumps(seen))
    """
)


def test_child_workspace_filesystem_lists_and_uses_the_served_workspace(
    local_platform: Any, hostile_env: dict[str, str], tmp_path: Path
) -> None:
    """``workspace://`` in a ``--serve`` child: ``ls("")`` names the served
    workspace (the API's list would need the login), the served workspace
    reads and writes with the served credentials, any other is not there."""
    script = tmp_path / "child_fs.py"
    script.write_text(CHILD_FILESYSTEM)
    run = f"serve-fs/{uuid.uuid4().hex}"
    local_platform.reset_stats()
    proc = _serve(hostile_env, sys.executable, str(script), run)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    workspace = "gep-processing-results-a2s-service-workspace"
    assert seen["workspaces"] == [workspace]
    assert seen["listed"] == [f"{workspace}/{run}/a.txt"]
    assert seen["read"] == "through the served credentials"
    assert seen["other_exists"] is False
    assert "gep-alice-private-workspace" in seen["other_ls"]
    # one STS exchange: the parent's (the child asked the served endpoint)
    assert local_platform.api_stats()["sts_exchanges"] <= 1
