"""The CLI's top-level options (no command, no network)."""

from __future__ import annotations

import subprocess
import sys

import sts_bridge


def test_version_prints_the_package_version_and_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sts_bridge", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"sts-bridge {sts_bridge.__version__}"
