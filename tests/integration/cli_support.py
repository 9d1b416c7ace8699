"""The `sts-bridge` command as a user runs it: a subprocess, ``python -m sts_bridge``.
The fixtures built on it (``cli_env``, ``run_cli``) are in conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Cli:
    """Runs ``sts-bridge ARGS`` in a subprocess with ``env`` and returns its result.

    ``stdin`` is the standard input (``None``: none); stdout and stderr are
    ``str`` unless ``text`` is false. ``timeout`` only ends a hung command (a
    test that hangs fails instead of holding the suite); nothing asserts on time.
    """

    env: dict[str, str]
    timeout: float = 120
    text: bool = True

    def __call__(
        self,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        stdin: Any = None,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[Any]:
        return subprocess.run(
            [sys.executable, "-m", "sts_bridge", *args],
            env=self.env if env is None else env,
            input=stdin,
            capture_output=True,
            text=self.text,
            timeout=self.timeout,
            **kwargs,
        )


def cli_environment(platform_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A user's shell environment for the CLI: this process's variables without
    ``AWS_*`` / ``S3_*`` (no ambient keys), the platform's block (``platform_env``:
    TERRAPI_* and the test's cache), and a configuration file that does not exist."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    full.update(platform_env)
    full["STS_BRIDGE_CONFIG_FILE"] = str(tmp_path / "no-config")
    return full
