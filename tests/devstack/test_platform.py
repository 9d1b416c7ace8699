"""LocalPlatform lifecycle and the `up` command: starts fast, stops clean."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sts_bridge_devstack.platform import LocalPlatform
from sts_bridge_devstack.pytest_plugin import require_platform

pytestmark = pytest.mark.integration

ENV_NAMES = {
    "TERRAPI_URL",
    "TERRAPI_ISSUER",
    "TERRAPI_CLIENT_ID",
    "TERRAPI_CLIENT_SECRET",
    "TERRAPI_AUDIENCE",
    "TERRAPI_SCOPES",
    "STS_BRIDGE_DEVSTACK_CLI_CLIENT_ID",
    "STS_BRIDGE_DEVSTACK_USER",
    "STS_BRIDGE_DEVSTACK_PASSWORD",
}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _pids(platform: LocalPlatform) -> list[int]:
    assert platform.idp is not None and platform.s3 is not None and platform._api is not None
    pids = [platform._api.pid, platform.idp.pid or 0]
    pids += [proc.pid for proc in platform.s3._procs.values()]
    return [p for p in pids if p]


def test_start_stop_three_times_leaves_nothing(tmp_path: Path) -> None:
    require_platform()
    for round_ in range(3):
        platform = LocalPlatform(workdir=tmp_path, token_ttl=60)
        platform.start()
        try:
            print(f"local platform started in {platform.start_seconds:.1f} s")  # not asserted
            env = platform.env()
            assert set(env) == ENV_NAMES
            assert env["TERRAPI_URL"].endswith("/core")
            token = platform.service_token()
            resp = requests.get(
                env["TERRAPI_URL"] + "/v2/storage/workspaces",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert resp.status_code == 200, f"round {round_}: {resp.text}"
            pids = _pids(platform)
            dirs = [platform.workdir, platform.s3.workdir, platform.idp.workdir]  # type: ignore[union-attr]
        finally:
            platform.stop()
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if _alive(p)], f"round {round_}: processes left"
        assert not [d for d in dirs if d is not None and Path(d).exists()], "temp folders left"
    assert list(tmp_path.iterdir()) == []


def test_up_prints_only_the_export_block_and_stops_on_sigterm() -> None:
    require_platform()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sts_bridge_devstack", "up", "--token-ttl", "60", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        lines = []
        assert proc.stdout is not None
        while len(lines) < len(ENV_NAMES):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
        assert len(lines) == len(ENV_NAMES), proc.stderr.read() if proc.stderr else ""
        names = set()
        env = {}
        for line in lines:
            assert line.startswith("export ")
            name, _, value = line[len("export ") :].partition("=")
            names.add(name)
            env[name] = value.strip("'")
        assert names == ENV_NAMES
        resp = requests.get(env["TERRAPI_URL"] + "/v2/user/platforms", timeout=10)
        assert resp.status_code == 401
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out == ""  # nothing else on stdout
        assert "stopped" in err
        with pytest.raises(requests.ConnectionError):
            requests.get(env["TERRAPI_URL"] + "/v2/user/platforms", timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_cli_devstack_command_passes_its_arguments_through() -> None:
    from sts_bridge.cli._app import build_parser
    from sts_bridge.cli.devstack_commands import devstack_argv

    args = build_parser().parse_args(
        ["devstack", "up", "--token-ttl", "5", "--sts-duration", "5", "--auto-approve"]
    )
    assert devstack_argv(args)[1:] == [
        "-m",
        "sts_bridge_devstack",
        "up",
        "--token-ttl",
        "5",
        "--sts-duration",
        "5",
        "--auto-approve",
    ]


def test_sdk_does_not_import_the_devstack() -> None:
    code = (
        "import sys, sts_bridge.cli._app as a; a.build_parser(); "
        "print(any(m.startswith('sts_bridge_devstack') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
