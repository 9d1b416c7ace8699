"""What the fault suite shares (its fixtures are in conftest.py): the proxied
platform, the CLI runner, the one-line-error check and the bucket checker.

``Proxied``: next to a running local platform, a second reference API
process with the same configuration except that it hands out a
:class:`FaultProxy` in front of radosgw as the workspaces' S3 endpoint, and a
second proxy in front of that API. The CLI runs against it as a user would
(``TERRAPI_URL`` through the API proxy); the checks read the bucket directly
(:class:`Checker`), never through a proxy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fault_proxy import FaultProxy

#: stall timeout (s) the CLI gets in the fault tests (STS_BRIDGE_STALL_TIMEOUT)


STALL = 2.0
BUCKET = "gep-processing-results"
PREFIX = "a2s/"
MiB = 1024 * 1024


@dataclass
class Proxied:
    """A platform behind fault proxies (see the module docstring)."""

    platform: Any
    s3: FaultProxy
    api: FaultProxy
    api_url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    def heal(self) -> None:
        for proxy in (self.s3, self.api):
            proxy.heal()
            proxy.reset_counters()


def start_proxied(platform: Any, workdir: Path) -> Proxied:
    from sts_bridge_devstack import lifeline
    from sts_bridge_devstack.ports import free_port, wait_until_ready

    config = json.loads((Path(platform.workdir) / "api-config.json").read_text())
    s3 = FaultProxy.for_url(platform.s3_endpoint).start()
    config["s3_public_url"] = s3.url_for(platform.s3_endpoint)
    port = free_port()
    api = FaultProxy(f"127.0.0.1:{port}").start()
    api_url = platform.api_url.replace(f":{platform.api_port}/", f":{port}/")
    config["public_url"] = api.url_for(api_url)
    path = workdir / "api-config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh)
    log = open(workdir / "api.log", "wb")  # noqa: SIM115
    process = lifeline.popen(
        [
            sys.executable,
            "-m",
            "sts_bridge_devstack.api",
            "--config",
            str(path),
            "--port",
            str(port),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/__devstack/stats", timeout=60, what="API")
    except BaseException:
        process.kill()
        s3.stop()
        api.stop()
        raise
    env = platform.env()
    env["TERRAPI_URL"] = api.url_for(api_url)
    return Proxied(platform, s3, api, api_url, process, env)


def stop_proxied(proxied: Proxied) -> None:
    proxied.s3.stop()
    proxied.api.stop()
    proxied.process.terminate()
    try:
        proxied.process.wait(10)
    except subprocess.TimeoutExpired:
        proxied.process.kill()
        proxied.process.wait(10)


def cli_env(proxied: Proxied, tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "S3_", "TERRAPI_", "STS_BRIDGE_"))
    }
    env.update(proxied.env)
    env["STS_BRIDGE_CACHE_DIR"] = str(tmp_path / "cache")
    env["STS_BRIDGE_CONFIG_FILE"] = str(tmp_path / "no-config")
    env["STS_BRIDGE_STALL_TIMEOUT"] = str(STALL)
    return env


@dataclass
class Checker:
    """Reads the bucket directly (no proxy, admin keys) to count what a fault left."""

    s3: Any  # the gateway's admin keys: lists the whole bucket and its uploads
    ws: Any  # a Workspace straight to radosgw: objects and uploads belong to the role
    base: str  # this test's folder, relative to the workspace

    def _read(self, call: Callable[[Any], Any]) -> Any:
        """``call(s3)``; once more with new credentials when refused (5 s
        credentials can expire between signing and checking on a busy machine)."""
        try:
            return call(self.ws.s3_client())
        except Exception as exc:
            if "AccessDenied" not in str(exc):
                raise
            self.ws.credentials_refused(self.ws.credentials())
            return call(self.ws.s3_client())

    def objects(self) -> dict[str, int]:
        out: dict[str, int] = {}
        kwargs: dict[str, Any] = {"Bucket": BUCKET, "Prefix": PREFIX + self.base}
        while True:
            resp = self.s3.list_objects_v2(**kwargs)
            for obj in resp.get("Contents", []):
                out[obj["Key"][len(PREFIX) :]] = int(obj["Size"])
            if not resp.get("IsTruncated"):
                return out
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]

    def data(self, key: str) -> bytes:
        return bytes(
            self._read(lambda s3: s3.get_object(Bucket=BUCKET, Key=PREFIX + key))["Body"].read()
        )

    def put(self, key: str, data: bytes) -> None:
        self._read(lambda s3: s3.put_object(Bucket=BUCKET, Key=PREFIX + key, Body=data))

    def uploads(self) -> list[str]:
        # the bucket owner's keys: workspace credentials may not list uploads
        resp = self.s3.list_multipart_uploads(Bucket=BUCKET, Prefix=PREFIX + self.base)
        return [u["Key"] for u in resp.get("Uploads", [])]

    def outside(self) -> list[str]:
        """Keys of this test outside the workspace prefix (there must be none)."""
        resp = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=self.base)
        return [o["Key"] for o in resp.get("Contents", [])]


def _reader(platform: Any, cache_dir: Path) -> Any:
    """A workspace of ``platform`` (straight to radosgw, refreshing)."""
    from sts_bridge import Client

    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("TERRAPI_", "STS_BRIDGE_")):
                mp.delenv(name)
        for name, value in {**platform.env(), "STS_BRIDGE_CACHE_DIR": str(cache_dir)}.items():
            mp.setenv(name, value)
        return Client.from_env().workspace()


def make_checker(platform: Any, readers: dict[int, Any], cache_dir: Path) -> Checker:
    """A checker for ``platform`` with a folder of its own (one reader per platform)."""
    if id(platform) not in readers:
        readers[id(platform)] = _reader(platform, cache_dir)
    return Checker(
        platform.s3.client("s3"), readers[id(platform)], f"faults/{uuid.uuid4().hex[:12]}/"
    )


def run_cli(
    args: list[str],
    env: dict[str, str],
    *,
    timeout: float = 150,
    stdin: bytes | None = None,
) -> tuple[subprocess.CompletedProcess[bytes], float]:
    """Run ``sts-bridge ARGS``; returns the result and its wall time (s)."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "sts_bridge", *args],
        env=env,
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )
    return result, time.monotonic() - started


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    """The ``error:`` line of a failed run; asserts the one-line-error contract."""
    err = result.stderr.decode()
    assert result.returncode != 0, err
    assert "Traceback" not in err and "unexpected" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("sts-bridge: error: ")]
    assert len(errors) == 1, err
    return errors[0]


def pattern_file(path: Path, size: int, seed: int = 0) -> bytes:
    """``size`` bytes where every 64 KiB block differs (a misplaced part shows)."""
    import hashlib

    blocks = []
    for i in range(0, size, 65536):
        head = hashlib.sha256(f"{seed}:{i}".encode()).digest()
        blocks.append((head * 2048)[: min(65536, size - i)])
    data = b"".join(blocks)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


Runner = Callable[..., tuple[subprocess.CompletedProcess[bytes], float]]
