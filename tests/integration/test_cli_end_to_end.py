"""The `sts-bridge` command as a user runs it, against the local platform:
results on stdout, one-line errors with hints on stderr, documented exit
codes, and a warm `presign` that makes no network call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def run(args: list[str], env: dict[str, str], stdin: str | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "sts_bridge", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def env(platform_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    full.update(platform_env)
    full["STS_BRIDGE_CONFIG_FILE"] = str(tmp_path / "no-config")
    return full


def assert_clean_error(result: Any, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("sts-bridge: error: ")
    for needle in needles:
        assert needle in result.stderr


@pytest.mark.requires_radosgw("fetches a presigned URL")
def test_the_main_job(env: dict[str, str], local_platform: Any, tmp_path: Path) -> None:
    login = run(["login", "--flow", "client-credentials"], env)
    assert login.returncode == 0, login.stderr

    who = run(["whoami", "--json"], env)
    assert who.returncode == 0, who.stderr
    assert "service-account-" in who.stdout
    token = run(["token"], env).stdout.strip()
    assert token.count(".") == 2  # a JWT, printed only by `token`
    assert token not in who.stdout and token not in who.stderr

    names = run(["workspaces"], env).stdout.split()
    assert names == ["gep-processing-results-a2s-service-workspace"]

    src = tmp_path / "report.csv"
    src.write_text("a,b\n1,2\n")
    base = f"cli/{uuid.uuid4().hex}/"
    up = run(["upload", str(src), "--to", base, "--json"], env)
    assert up.returncode == 0, up.stderr
    uploaded = json.loads(up.stdout)
    assert [u["key"] for u in uploaded] == [base + "report.csv"]
    assert uploaded[0]["size"] == len("a,b\n1,2\n")

    listing = run(["ls", base], env)
    assert "report.csv" in listing.stdout

    # warm presign: credentials and workspace come from the cache
    local_platform.reset_stats()
    link = run(["presign", base + "report.csv", "--expires-in", "10m"], env)
    assert link.returncode == 0, link.stderr
    assert local_platform.api_stats()["total"] == 0
    assert local_platform.idp_stats()["total"] == 0
    url = link.stdout.strip()
    assert url.count("\n") == 0 and url.startswith("http")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"a,b\n1,2\n"

    down = run(["download", base + "report.csv", str(tmp_path / "copy.csv")], env)
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "copy.csv").read_text() == "a,b\n1,2\n"

    refused = run(["rm", base, "--recursive"], env, stdin="")
    assert refused.returncode != 0  # not a terminal and no --yes: nothing deleted
    assert "report.csv" in run(["ls", base], env).stdout
    removed = run(["rm", base, "--recursive", "--yes"], env)
    assert removed.returncode == 0, removed.stderr
    assert "report.csv" not in run(["ls", base], env).stdout


def test_unknown_workspace_is_exit_6_with_suggestion(env: dict[str, str]) -> None:
    result = run(["ls", "-w", "gep-processing-results-a2s-service-workspac"], env)
    assert_clean_error(result, 6, "did you mean", "gep-processing-results-a2s-service-workspace")


def test_someone_elses_workspace_is_exit_5(env: dict[str, str]) -> None:
    result = run(["ls", "-w", "gep-alice-private-workspace"], env)
    assert_clean_error(result, 5, "403")


def test_unsafe_key_is_exit_2_before_any_request(env: dict[str, str], local_platform: Any) -> None:
    run(["workspaces"], env)
    local_platform.reset_stats()
    for key in ("../escape.txt", "/abs.txt", "a//b", "a\\b"):
        result = run(["presign", key], env)
        assert_clean_error(result, 2)
    assert local_platform.api_stats()["total"] == 0


def test_not_configured_is_exit_3_naming_what_it_looked_for(tmp_path: Path) -> None:
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("TERRAPI_", "STS_BRIDGE_"))}
    bare["STS_BRIDGE_CONFIG_FILE"] = str(tmp_path / "no-config")
    bare["STS_BRIDGE_CACHE_DIR"] = str(tmp_path / "cache")
    result = run(["workspaces"], bare)
    assert result.returncode in (3, 4), result.stderr
    assert "Traceback" not in result.stderr
    assert "TERRAPI_" in result.stderr


def test_wrong_client_secret_is_exit_4(env: dict[str, str]) -> None:
    bad = dict(env, TERRAPI_CLIENT_SECRET="wrong-secret-value")
    result = run(["workspaces"], bad)
    assert_clean_error(result, 4, "TERRAPI_CLIENT_SECRET")
    assert "wrong-secret-value" not in result.stderr


def test_progress_bar_on_a_terminal_only(env: dict[str, str], tmp_path: Path) -> None:
    import pty

    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(24 * 1024 * 1024))
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "sts_bridge", "upload", str(src), "--to", "cli/tty.bin"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=secondary,
            timeout=120,
        )
        os.close(secondary)
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO once the terminal's other side is closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(primary)
    assert proc.returncode == 0
    assert b"100%" in shown and b"MiB" in shown  # the bar, on the terminal
    assert proc.stdout.decode().strip().endswith("cli/tty.bin")  # stdout: only the result
    piped = run(["upload", str(src), "--to", "cli/piped.bin"], env)
    assert piped.returncode == 0
    assert "%" not in piped.stderr  # not a terminal: no bar
