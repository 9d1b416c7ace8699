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
