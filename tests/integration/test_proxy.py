"""Behind a forward proxy: every connection of the CLI and the filesystem goes
through it, and ``NO_PROXY`` takes it out again.

The proxy is Debian's tinyproxy (installed by ``devstack/install-system-deps.sh``),
started here on a free loopback port; its log names every request it relayed
(``Request (file descriptor N): GET http://host:port/...``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.requires_radosgw("uploads, sync and STS")]

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class Tinyproxy:
    """tinyproxy on a free loopback port; ``requests()`` reads what it relayed so far."""

    def __init__(self, workdir: Path) -> None:
        from sts_bridge_devstack.ports import free_port

        self.port = free_port()
        self.log = workdir / "tinyproxy.log"
        conf = workdir / "tinyproxy.conf"
        conf.write_text(
            f"Port {self.port}\nListen 127.0.0.1\nTimeout 120\n"
            f'LogFile "{self.log}"\nLogLevel Connect\nMaxClients 200\n'
            "Allow 127.0.0.1\nDisableViaHeader Yes\n"
        )
        from sts_bridge_devstack import lifeline

        self.process = lifeline.popen(
            ["tinyproxy", "-d", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        from sts_bridge_devstack.ports import wait_until_ready

        # a request to the proxy itself: tinyproxy answers it (an error page) once it listens
        wait_until_ready(f"http://127.0.0.1:{self.port}/", timeout=30, what="tinyproxy")
        self.url = f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """``METHOD target`` of every request relayed (CONNECT: ``host:port``)."""
        if not self.log.exists():
            return []
        found = re.findall(r"Request \(file descriptor \d+\): (\S+ \S+)", self.log.read_text())
        # the readiness probe asks the proxy itself ("GET /"): not relayed
        return [r for r in found if r.startswith("CONNECT ") or " http" in r]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    if shutil.which("tinyproxy") is None:
        pytest.fail("tinyproxy is missing: run devstack/install-system-deps.sh (make setup)")
    started = Tinyproxy(tmp_path)
    try:
        yield started
    finally:
        started.stop()


def _env(platform_env: dict[str, str], tmp_path: Path, **proxies: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "S3_")) and k.lower() not in PROXY_VARIABLES
    }
    env.update(platform_env)
    env["STS_BRIDGE_CONFIG_FILE"] = str(tmp_path / "no-config")
    env.update(proxies)
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "sts_bridge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, (args, result.stderr)
    return result


_FILESYSTEM = """
import sys, fsspec
fs = fsspec.filesystem("workspace")
url = sys.argv[1]
fs.pipe_file(url + "fs.txt", b"through the proxy")
assert fs.cat_file(url + "fs.txt") == b"through the proxy"
print(sorted(p.rsplit("/", 1)[-1] for p in fs.ls(url, detail=False)))
"""


def _hosts(requests: list[str]) -> set[str]:
    """host:port of each relayed request (absolute-form targets or CONNECT)."""
    hosts = set()
    for line in requests:
        method, target = line.split(" ", 1)
        hosts.add(target if method == "CONNECT" else urlsplit(target).netloc)
    return hosts


def test_every_connection_goes_through_the_proxy_and_no_proxy_takes_it_out(
    proxy: Tinyproxy, platform_env: dict[str, str], local_platform: Any, tmp_path: Path
) -> None:
    idp = urlsplit(local_platform.issuer).netloc
    api = urlsplit(local_platform.api_url).netloc
    store = urlsplit(local_platform.s3_endpoint).netloc
    env = _env(platform_env, tmp_path, HTTP_PROXY=proxy.url)
    base = f"proxy-tests/{uuid.uuid4().hex}/"
    src = tmp_path / "src"
    src.mkdir()
    (src / "small.txt").write_text("small")
    (src / "big.bin").write_bytes(os.urandom(20 * 1024 * 1024))  # multipart, 100-continue

    seen = {}

    def step(name: str, args: list[str]) -> subprocess.CompletedProcess[str]:
        before = len(proxy.requests())
        result = _run(args, env)
        seen[name] = _hosts(proxy.requests()[before:])
        return result

    step("login", ["login", "--flow", "client-credentials"])
    names = step("workspaces", ["workspaces"]).stdout.split()
    assert names == ["gep-processing-results-a2s-service-workspace"]
    step("upload", ["upload", str(src / "big.bin"), "--to", base])
    step("download", ["download", base + "big.bin", str(tmp_path / "big.copy")])
    assert (tmp_path / "big.copy").read_bytes() == (src / "big.bin").read_bytes()
    step("sync", ["sync", str(src), f"workspace://{names[0]}/{base}synced/"])
    step("ls", ["ls", base])
    url = _run(["presign", base + "big.bin"], env).stdout.strip()
    assert url.startswith(f"http://{store}/")
    before = len(proxy.requests())
    fs = subprocess.run(
        [sys.executable, "-c", _FILESYSTEM, f"workspace://{names[0]}/{base}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert fs.returncode == 0, fs.stderr
    assert "fs.txt" in fs.stdout
    seen["filesystem"] = _hosts(proxy.requests()[before:])

    assert idp in seen["login"]  # the token endpoint
    assert api in seen["workspaces"]
    for name in ("upload", "download", "sync", "ls", "filesystem"):
        assert store in seen[name], (name, seen[name])

    # NO_PROXY: the same commands reach everything directly
    direct = _env(platform_env, tmp_path, HTTP_PROXY=proxy.url, NO_PROXY="127.0.0.1")
    env = direct
    quiet = len(proxy.requests())
    _run(["logout"], direct)
    _run(["login", "--flow", "client-credentials"], direct)
    _run(["workspaces"], direct)
    _run(["upload", str(src / "small.txt"), "--to", base + "direct/"], direct)
    _run(["download", base + "direct/small.txt", str(tmp_path / "small.copy")], direct)
    _run(["ls", base], direct)
    assert proxy.requests()[quiet:] == []
    _run(["rm", base, "--recursive", "--yes"], direct)
