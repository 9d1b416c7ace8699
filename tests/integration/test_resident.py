"""The resident helper (``STS_BRIDGE_RESIDENT``) against the local platform.

Every command runs as ``python -m sts_bridge`` in a subprocess, as a user
runs it; the first one starts the helper, the later ones are run by it (the
``--debug`` line says so). What must not change when the helper runs a
command: its output, its exit status and error lines, its working
directory, environment and stdin; Ctrl-C and a caller that dies still
unwind the command (tests/faults: no multipart upload left behind). No
wall time is asserted here (``bench/`` compares).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sts_bridge.cli.resident import socket_path

pytestmark = pytest.mark.integration

WORKSPACE = "gep-processing-results-a2s-service-workspace"
SERVED_LINE = "run by the resident helper"


def helpers(path: str) -> list[int]:
    """Pids of the helpers serving ``path`` (their command line names it)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"sts_bridge.cli.resident" in a for a in cmdline) and path.encode() in cmdline:
            pids.append(int(entry))
    return pids


def _wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.fixture
def env(platform_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    full.update(platform_env)
    full["STS_BRIDGE_CONFIG_FILE"] = str(tmp_path / "no-config")
    full["TERRAPI_WORKSPACE"] = WORKSPACE
    full["STS_BRIDGE_RESIDENT"] = "120"
    yield full
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STS_BRIDGE_CACHE_DIR", full["STS_BRIDGE_CACHE_DIR"])
        path = socket_path()
    assert path is not None
    for pid in helpers(path):
        os.kill(pid, signal.SIGTERM)


def cli(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sts_bridge", *args], env=env, capture_output=True, timeout=120, **kw
    )


def _served(env: dict[str, str]) -> str:
    """Start the helper (a first command) and wait until it answers; its socket path."""
    first = cli(["ls"], env)
    assert first.returncode == 0, first.stderr
    assert SERVED_LINE.encode() not in first.stderr
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STS_BRIDGE_CACHE_DIR", env["STS_BRIDGE_CACHE_DIR"])
        path = socket_path()
    assert path is not None
    _wait_for(lambda: os.path.exists(path))
    assert len(helpers(path)) == 1
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
    return path


def test_data_commands_run_in_the_helper_as_they_would_here(
    env: dict[str, str], tmp_path: Path
) -> None:
    _served(env)
    src = tmp_path / "data.bin"
    data = os.urandom(3 * 1024 * 1024 + 7)
    src.write_bytes(data)

    up = cli(["--debug", "upload", str(src), "--to", "resident/data.bin"], env)
    assert up.returncode == 0, up.stderr
    assert SERVED_LINE.encode() in up.stderr
    assert up.stdout.decode().strip().endswith("/resident/data.bin")

    here = tmp_path / "here"
    here.mkdir()
    down = cli(["download", "resident/data.bin"], env, cwd=here)  # the caller's folder
    assert down.returncode == 0, down.stderr
    assert (here / "data.bin").read_bytes() == data

    piped = cli(["upload", "-", "--to", "resident/piped.bin"], env, input=b"from stdin")
    assert piped.returncode == 0, piped.stderr
    out = cli(["download", "resident/piped.bin", "-"], env)
    assert (out.returncode, out.stdout) == (0, b"from stdin")

    missing = cli(["download", "resident/nope.bin", str(tmp_path / "nope")], env)
    assert missing.returncode == 6
    lines = missing.stderr.decode().splitlines()
    assert lines[0].startswith("sts-bridge: error: no object 'resident/nope.bin'")
    assert lines[1].startswith("sts-bridge: hint: ")
    assert not (tmp_path / "nope").exists()

    other = cli(["ls"], {**env, "TERRAPI_WORKSPACE": "no-such-workspace"})  # its own env
    assert other.returncode != 0
    assert b"no-such-workspace" in other.stderr

    usage = cli(["download"], env)  # argparse's exit inside the worker
    assert usage.returncode == 2
    assert b"sts-bridge: error:" in usage.stderr


def test_commands_that_are_not_data_commands_run_here(env: dict[str, str]) -> None:
    _served(env)
    who = cli(["--debug", "whoami"], env)
    assert who.returncode == 0, who.stderr
    assert SERVED_LINE.encode() not in who.stderr


def test_a_helper_started_in_a_checkout_runs_the_installed_code(
    env: dict[str, str], tmp_path: Path
) -> None:
    decoy = tmp_path / "checkout" / "sts_bridge"  # what `python -m` would import from here
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise SystemExit('the decoy was imported')\n")
    script = str(Path(sys.executable).parent / "sts-bridge")  # as installed: no cwd on sys.path
    first = subprocess.run([script, "ls"], env=env, capture_output=True, cwd=decoy.parent)
    assert first.returncode == 0, first.stderr
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STS_BRIDGE_CACHE_DIR", env["STS_BRIDGE_CACHE_DIR"])
        path = socket_path()
    _wait_for(lambda: os.path.exists(path))
    again = subprocess.run(
        [script, "--debug", "ls"], env=env, capture_output=True, cwd=decoy.parent
    )
    assert again.returncode == 0, again.stderr
    assert SERVED_LINE.encode() in again.stderr


def test_the_helper_leaves_after_its_idle_time(env: dict[str, str]) -> None:
    env = {**env, "STS_BRIDGE_RESIDENT": "2"}
    path = _served(env)
    again = cli(["--debug", "ls"], env)
    assert SERVED_LINE.encode() in again.stderr
    _wait_for(lambda: not helpers(path), timeout=30)
    assert not os.path.exists(path)
