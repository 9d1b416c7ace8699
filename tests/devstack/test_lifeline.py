"""A pytest run killed with SIGKILL leaves none of the servers it started,
nor their folders (which hold signing keys and client secrets)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sts_bridge_devstack.pytest_plugin import require_platform

pytestmark = pytest.mark.integration

#: A test that starts a platform through the fixtures, tells its servers and
#: holds them until it is killed (or its stdin ends: the test that started it
#: ended without killing it).
HELD_PLATFORM = """
import json, sys
from urllib.parse import urlsplit

def test_held(platform_factory):
    platform = platform_factory(s3_backend={backend!r})
    s3 = platform.s3
    pids = [platform._api.pid, platform.idp.pid] + [p.pid for p in s3._procs.values()]
    ports = [platform.api_port, platform.idp.port, urlsplit(s3.endpoint_url).port]
    ports += [s3.mon_port] if {backend!r} == "radosgw" else []
    folders = [str(platform.workdir), str(s3.workdir)]
    print("SERVERS " + json.dumps({{"pids": pids, "ports": ports, "folders": folders}}), flush=True)
    sys.stdin.read()
"""


def _groups_members(groups: set[int]) -> set[int]:
    """The processes of ``groups`` that have not exited (zombies have: they
    wait for a reaper only and hold no port)."""
    members = set()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) in groups and fields[0] != "Z":
                members.add(int(entry.name))
    return members


def _answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("backend", ["radosgw", "moto"])
def test_servers_end_with_a_killed_pytest(backend: str, tmp_path: Path) -> None:
    require_platform(backend)
    (tmp_path / "test_held.py").write_text(HELD_PLATFORM.format(backend=backend))
    groups: set[int] = set()
    folders: list[Path] = []
    with subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_held.py"],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as run:
        try:
            assert run.stdout is not None
            for line in run.stdout:  # until the platform is up (or pytest ends)
                if "SERVERS " in line:
                    servers = json.loads(line.split("SERVERS ", 1)[1])
                    break
            else:
                pytest.fail(f"the held platform did not start (pytest exited {run.wait()})")
            groups = set(servers["pids"])  # each server leads a group of its own
            members = _groups_members(groups)
            assert set(servers["pids"]) <= members
            assert all(_answers(port) for port in servers["ports"])
            folders = [Path(folder) for folder in servers["folders"]]
            assert all(folder.is_dir() for folder in folders)
            run.send_signal(signal.SIGKILL)
            run.wait()
            guard = time.monotonic() + 60  # a failure guard, not a measure
            while members and time.monotonic() < guard:
                time.sleep(0.1)
                members = _groups_members(groups)
            assert members == set(), f"left behind: {members}"
            assert [port for port in servers["ports"] if _answers(port)] == []
            # the folders go once the servers have ended
            while any(f.exists() for f in folders) and time.monotonic() < guard:
                time.sleep(0.1)
            assert [f for f in folders if f.exists()] == []
        finally:
            run.kill()
            for pgid in groups:  # a failing run leaves nothing behind either
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)


def test_a_group_whose_leader_pid_was_taken_again_is_not_ended() -> None:
    """The watchdog ends a group only while it is the one registered: its
    leader is the same process (same start time), or gone with members left."""
    from sts_bridge_devstack import lifeline

    sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        started = lifeline._start_time(sleeper.pid)
        assert lifeline._ours(sleeper.pid, started)
        # another process behind the same pid: not ours
        assert not lifeline._ours(sleeper.pid, str(int(started) + 1))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not lifeline._ours(sleeper.pid, started)  # a group with no member left
