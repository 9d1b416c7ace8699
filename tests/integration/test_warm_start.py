"""Warm start (issue 7): a command that finds its credentials in the cache
makes no request to the API or the identity provider and imports none of the
heavy libraries (boto3/botocore, authlib/joserfc/cryptography, requests,
the generated client and pydantic, http.server).

Each command runs in a subprocess through a small wrapper that writes the
names in ``sys.modules`` at exit, so the test sees every import of the real
CLI, including the lazy ones. No wall time is asserted here (see ``bench/``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

WORKSPACE = "gep-processing-results-a2s-service-workspace"

#: Top-level packages a warm, cached-credentials command must not import.
HEAVY = (
    "boto3",
    "botocore",
    "s3transfer",
    "authlib",
    "joserfc",
    "cryptography",
    "requests",
    "terrapi_client",
    "pydantic",
    "pydantic_core",
    "http.server",
    "webbrowser",
)

_WRAPPER = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "sts-bridge"
runpy.run_module("sts_bridge", run_name="__main__", alter_sys=True)
"""


def run(args: list[str], env: dict[str, str], modules: Path | None = None) -> Any:
    """Run ``sts-bridge ARGS``; with ``modules``, write the imported module names there."""
    if modules is None:
        argv = [sys.executable, "-m", "sts_bridge", *args]
    else:
        argv = [sys.executable, "-c", _WRAPPER, str(modules), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def heavy_imports(path: Path) -> list[str]:
    names = json.loads(path.read_text())
    return sorted(
        name for name in names if any(name == h or name.startswith(h + ".") for h in HEAVY)
    )


def _warm_up(env: dict[str, str]) -> None:
    # Cold: token, workspace description and STS credentials are fetched and cached.
    cold = run(["presign", "-w", WORKSPACE, "warm/a.txt"], env)
    assert cold.returncode == 0, cold.stderr
    default = run(["presign", "warm/a.txt"], env)  # remembers the default workspace
    assert default.returncode == 0, default.stderr


def test_warm_presign_makes_no_request_and_no_heavy_import(
    cli_env: dict[str, str], local_platform: Any, tmp_path: Path
) -> None:
    _warm_up(cli_env)
    local_platform.reset_stats()
    cases = {
        "default 1h": ["presign", "-w", WORKSPACE, "warm/a.txt"],
        "10m": ["presign", "-w", WORKSPACE, "--expires-in", "10m", "warm/a.txt"],
        "15m": ["presign", "-w", WORKSPACE, "--expires-in", "15m", "warm/a.txt"],
        "default workspace": ["presign", "warm/a.txt", "warm/b.txt"],
    }
    for name, args in cases.items():
        modules = tmp_path / f"modules-{name.replace(' ', '-')}.json"
        result = run(args, cli_env, modules)
        assert result.returncode == 0, (name, result.stderr)
        urls = result.stdout.split()
        assert urls and all(u.startswith("http") and "X-Amz-Signature=" in u for u in urls)
        assert heavy_imports(modules) == [], name
        assert "sts_bridge.auth.oauth" not in json.loads(modules.read_text())
    # 1 h cannot be had with 900 s credentials: clamped, said, and no exchange for it
    one_hour = run(["presign", "-w", WORKSPACE, "warm/a.txt"], cli_env)
    assert one_hour.returncode == 0, one_hour.stderr
    assert "valid for" in one_hour.stderr and "not 3600s" in one_hour.stderr
    assert local_platform.api_stats()["total"] == 0
    assert local_platform.idp_stats()["total"] == 0


def test_warm_credential_process_makes_no_request_and_no_heavy_import(
    cli_env: dict[str, str], local_platform: Any, tmp_path: Path
) -> None:
    # The AWS CLI runs it before requests whenever its keys have < 15 min left.
    _warm_up(cli_env)
    local_platform.reset_stats()
    modules = tmp_path / "modules.json"
    result = run(["credentials", WORKSPACE, "--format", "credential-process"], cli_env, modules)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["Version"] == 1 and payload["AccessKeyId"] and payload["Expiration"]
    assert heavy_imports(modules) == []
    assert local_platform.api_stats()["total"] == 0
    assert local_platform.idp_stats()["total"] == 0


def test_help_imports_nothing_heavy(tmp_path: Path) -> None:
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("TERRAPI_", "STS_BRIDGE_"))}
    for args in (["--help"], ["presign", "--help"], ["credentials", "--help"]):
        modules = tmp_path / "modules.json"
        result = run(args, bare, modules)
        assert result.returncode == 0, result.stderr
        assert "usage:" in result.stdout
        names = json.loads(modules.read_text())
        assert heavy_imports(modules) == [], args
        # --help does not even open a workspace
        assert "sts_bridge.client" not in names and "sts_bridge.auth" not in names, args


def test_warm_sync_makes_no_api_request_and_no_heavy_import(
    cli_env: dict[str, str], local_platform: Any, tmp_path: Path
) -> None:
    _warm_up(cli_env)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"a")
    (tree / "sub" / "b.txt").write_bytes(b"b")
    url = f"workspace://{WORKSPACE}/warm/sync-{os.getpid()}/"
    local_platform.reset_stats()
    for args in (["sync", str(tree), url], ["sync", str(tree), url, "--dry-run"]):
        modules = tmp_path / "modules.json"
        result = run(args, cli_env, modules)
        assert result.returncode == 0, (args, result.stderr)
        assert heavy_imports(modules) == [], args
    assert local_platform.api_stats()["total"] == 0
    assert local_platform.idp_stats()["total"] == 0
    back = run(["sync", url, str(tmp_path / "back")], cli_env, tmp_path / "modules.json")
    assert back.returncode == 0, back.stderr
    assert heavy_imports(tmp_path / "modules.json") == []
    assert (tmp_path / "back" / "sub" / "b.txt").read_bytes() == b"b"


def test_warm_download_skips_importlib_metadata(
    cli_env: dict[str, str], local_platform: Any, tmp_path: Path
) -> None:
    # urllib3's http2 package imports importlib.metadata (zipfile, shutil,
    # csv ...) for HTTP/2 only; the transport defers it (s3/transport.py).
    _warm_up(cli_env)
    small = tmp_path / "tiny.txt"
    small.write_bytes(b"abc")
    key = f"warm/tiny-{os.getpid()}.txt"
    local_platform.reset_stats()
    for args in (
        ["upload", "-w", WORKSPACE, str(small), "--to", key],
        ["download", "-w", WORKSPACE, key, str(tmp_path / "back.txt")],
    ):
        modules = tmp_path / "modules.json"
        result = run(args, cli_env, modules)
        assert result.returncode == 0, (args, result.stderr)
        names = json.loads(modules.read_text())
        assert heavy_imports(modules) == [], args
        assert "urllib3.connectionpool" in names, args  # it did use urllib3
        assert "importlib.metadata" not in names, args
    assert (tmp_path / "back.txt").read_bytes() == b"abc"
    assert local_platform.api_stats()["total"] == 0
    assert local_platform.idp_stats()["total"] == 0
