"""Fixtures the integration tests share: the CLI in a subprocess (``run_cli``,
with ``cli_env``) and in this process (``cli``), and a count of the S3
requests the transfer engine makes (``requests_made``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_support import Cli, cli_environment


@pytest.fixture
def cli_env(platform_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """``cli_support.cli_environment`` for ``platform_env`` and this test."""
    return cli_environment(platform_env, tmp_path)


@pytest.fixture
def run_cli(cli_env: dict[str, str]) -> Cli:
    """``run_cli(["upload", ...])``: ``sts-bridge`` in a subprocess with ``cli_env``."""
    return Cli(cli_env)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``cli("sync", ...) -> (exit status, stdout, stderr)``: ``sts_bridge.cli.main``
    in this process, with this process's environment."""
    from sts_bridge.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            status = int(main(list(argv)))
        except SystemExit as exc:  # argparse's usage errors
            status = int(exc.code or 0)
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def requests_made(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every S3 request of the transfer engine, by method (HEAD, GET, PUT, POST,
    DELETE), counted around ``S3Http.call``: the requests still reach the store."""
    from sts_bridge.s3 import signed_http

    seen: Counter[str] = Counter()
    original = signed_http.S3Http.call

    def counting(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        seen[method] += 1
        return original(self, method, *args, **kwargs)

    monkeypatch.setattr(signed_http.S3Http, "call", counting)
    return seen
