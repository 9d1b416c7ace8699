"""`eval "$(sts-bridge devstack up --detach)"` and `sts-bridge devstack down`."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sts_bridge_devstack.pytest_plugin import require_platform

pytestmark = pytest.mark.integration

SCRIPT = """
set -e
eval "$("$PY" -m sts_bridge devstack up --detach --quiet)"
echo "pid=$STS_BRIDGE_DEVSTACK_PID"
"$PY" -m sts_bridge workspaces
"$PY" -m sts_bridge devstack down
"""


def _leftovers(pid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,pgid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()[1:] if line.split()[1] == str(pid)]


def test_detach_eval_then_down_leaves_nothing(tmp_path: Path) -> None:
    require_platform()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TERRAPI_", "STS_BRIDGE_"))}
    env.update(
        PY=sys.executable,
        STS_BRIDGE_CACHE_DIR=str(tmp_path / "cache"),
        STS_BRIDGE_CONFIG_FILE=str(tmp_path / "no-config"),
    )
    before = set(Path(tempfile.gettempdir()).glob("sts-bridge-devstack-*"))
    result = subprocess.run(
        ["bash", "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("pid=")
    pid = int(lines[0].removeprefix("pid="))
    assert "gep-processing-results-a2s-service-workspace" in lines[1:]
    assert "stopped" in result.stderr
    assert _leftovers(pid) == []  # the whole process group is gone
    after = set(Path(tempfile.gettempdir()).glob("sts-bridge-devstack-*"))
    assert after - before == set()  # and its temp folder


ENV_FILE_SCRIPT = """
set -e
eval "$("$PY" -m sts_bridge devstack up --detach --quiet --env-file "$ENV_FILE")"
trap '"$PY" -m sts_bridge devstack down' EXIT
for name in $(env | grep -o '^TERRAPI_[A-Z_]*'); do unset "$name"; done
. "$ENV_FILE"
"$PY" -m sts_bridge workspaces
"""


def test_detach_writes_the_env_file_it_is_given(tmp_path: Path) -> None:
    require_platform()
    env_file = tmp_path / "devstack.env"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TERRAPI_", "STS_BRIDGE_"))}
    env.update(
        PY=sys.executable,
        ENV_FILE=str(env_file),
        STS_BRIDGE_CACHE_DIR=str(tmp_path / "cache"),
        STS_BRIDGE_CONFIG_FILE=str(tmp_path / "no-config"),
    )
    result = subprocess.run(
        ["bash", "-c", ENV_FILE_SCRIPT], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    # the file alone was enough to use the platform and to stop it
    assert "gep-processing-results-a2s-service-workspace" in result.stdout.splitlines()
    assert "stopped" in result.stderr
    text = env_file.read_text()
    assert "export TERRAPI_URL=" in text
    pid = int(text.split("export STS_BRIDGE_DEVSTACK_PID=")[1].split()[0])
    assert _leftovers(pid) == []
    assert env_file.stat().st_mode & 0o777 == 0o600  # it holds a client secret
