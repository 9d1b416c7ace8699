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
from cli_support import Cli

pytestmark = pytest.mark.integration


def assert_clean_error(result: Any, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("sts-bridge: error: ")
    for needle in needles:
        assert needle in result.stderr


@pytest.mark.requires_radosgw("fetches a presigned URL")
def test_the_main_job(run_cli: Cli, local_platform: Any, tmp_path: Path) -> None:
    login = run_cli(["login", "--flow", "client-credentials"])
    assert login.returncode == 0, login.stderr

    who = run_cli(["whoami", "--json"])
    assert who.returncode == 0, who.stderr
    assert "service-account-" in who.stdout
    token = run_cli(["token"]).stdout.strip()
    assert token.count(".") == 2  # a JWT, printed only by `token`
    assert token not in who.stdout and token not in who.stderr

    names = run_cli(["workspaces"]).stdout.split()
    assert names == ["gep-processing-results-a2s-service-workspace"]

    src = tmp_path / "report.csv"
    src.write_text("a,b\n1,2\n")
    base = f"cli/{uuid.uuid4().hex}/"
    up = run_cli(["upload", str(src), "--to", base, "--json"])
    assert up.returncode == 0, up.stderr
    uploaded = json.loads(up.stdout)
    assert [u["key"] for u in uploaded] == [base + "report.csv"]
    assert uploaded[0]["size"] == len("a,b\n1,2\n")

    listing = run_cli(["ls", base])
    assert "report.csv" in listing.stdout

    # warm presign: credentials and workspace come from the cache
    local_platform.reset_stats()
    link = run_cli(["presign", base + "report.csv", "--expires-in", "10m"])
    assert link.returncode == 0, link.stderr
    assert local_platform.api_stats()["total"] == 0
    assert local_platform.idp_stats()["total"] == 0
    url = link.stdout.strip()
    assert url.count("\n") == 0 and url.startswith("http")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"a,b\n1,2\n"

    down = run_cli(["download", base + "report.csv", str(tmp_path / "copy.csv")])
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "copy.csv").read_text() == "a,b\n1,2\n"

    refused = run_cli(["rm", base, "--recursive"], stdin="")
    assert refused.returncode != 0  # not a terminal and no --yes: nothing deleted
    assert "report.csv" in run_cli(["ls", base]).stdout
    removed = run_cli(["rm", base, "--recursive", "--yes"])
    assert removed.returncode == 0, removed.stderr
    assert "report.csv" not in run_cli(["ls", base]).stdout


def test_unknown_workspace_is_exit_6_with_suggestion(run_cli: Cli) -> None:
    result = run_cli(["ls", "-w", "gep-processing-results-a2s-service-workspac"])
    assert_clean_error(result, 6, "did you mean", "gep-processing-results-a2s-service-workspace")


def test_someone_elses_workspace_is_exit_5(run_cli: Cli) -> None:
    result = run_cli(["ls", "-w", "gep-alice-private-workspace"])
    assert_clean_error(result, 5, "403")


def test_unsafe_key_is_exit_2_before_any_request(run_cli: Cli, local_platform: Any) -> None:
    run_cli(["workspaces"])
    local_platform.reset_stats()
    for key in ("../escape.txt", "/abs.txt", "a//b", "a\\b"):
        result = run_cli(["presign", key])
        assert_clean_error(result, 2)
    assert local_platform.api_stats()["total"] == 0


def test_not_configured_is_exit_3_naming_what_it_looked_for(tmp_path: Path) -> None:
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("TERRAPI_", "STS_BRIDGE_"))}
    bare["STS_BRIDGE_CONFIG_FILE"] = str(tmp_path / "no-config")
    bare["STS_BRIDGE_CACHE_DIR"] = str(tmp_path / "cache")
    result = Cli(bare)(["workspaces"])
    assert result.returncode in (3, 4), result.stderr
    assert "Traceback" not in result.stderr
    assert "TERRAPI_" in result.stderr


def test_wrong_client_secret_is_exit_4(run_cli: Cli) -> None:
    bad = dict(run_cli.env, TERRAPI_CLIENT_SECRET="wrong-secret-value")
    result = run_cli(["workspaces"], env=bad)
    assert_clean_error(result, 4, "TERRAPI_CLIENT_SECRET")
    assert "wrong-secret-value" not in result.stderr


def test_progress_bar_on_a_terminal_only(run_cli: Cli, tmp_path: Path) -> None:
    import pty

    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(24 * 1024 * 1024))
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "sts_bridge", "upload", str(src), "--to", "cli/tty.bin"],
            env=run_cli.env,
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
    piped = run_cli(["upload", str(src), "--to", "cli/piped.bin"])
    assert piped.returncode == 0
    assert "%" not in piped.stderr  # not a terminal: no bar
