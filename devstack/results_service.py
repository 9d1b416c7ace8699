"""Run the reference service (``examples/results_service.py``) under uvicorn beside a platform.

``ResultsService(platform, workdir, **env)`` starts ``uvicorn --app-dir
examples results_service:app`` on a free loopback port, configured for the
platform's exchange client and audience, and waits for ``/healthz``. Used by
tests/integration/test_results_service.py and bench/service_load.py. It needs
the source checkout (``examples/`` is not installed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from . import lifeline
from .ports import free_port, wait_until_ready

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class ResultsService:
    """A running reference service (``url``, ``log``, ``pid``); ``stop()`` ends it."""

    def __init__(
        self, platform: Any, workdir: Path, *, tree: Path | None = None, **env: str
    ) -> None:
        """``tree``: another source checkout to run (its ``examples/`` and its
        ``sts_bridge`` first on ``PYTHONPATH``; benchmarks compare two trees)."""
        examples = EXAMPLES if tree is None else Path(tree) / "examples"
        if not (examples / "results_service.py").is_file():
            raise RuntimeError(f"no results_service.py in {examples}")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(workdir) / f"results-service-{self.port}.log"
        environ = {
            k: v for k, v in os.environ.items() if not k.startswith(("TERRAPI_", "STS_BRIDGE_"))
        }
        environ.update(
            TERRAPI_URL=platform.api_url,
            TERRAPI_ISSUER=platform.issuer,
            TERRAPI_CLIENT_ID=platform.exchange_client_id,
            TERRAPI_CLIENT_SECRET=platform.exchange_client_secret,
            TERRAPI_AUDIENCE=platform.audience,
            TERRAPI_SCOPES="openid profile gep",
            STS_BRIDGE_CACHE_DIR=str(Path(workdir) / "cache"),
            RESULTS_AUDIENCE=platform.exchange_audience,
            RESULTS_SCOPES="gep",
            RESULTS_LINK_SECONDS="600",
        )
        if tree is not None:
            environ["PYTHONPATH"] = os.pathsep.join(
                [str(tree)] + [p for p in [environ.get("PYTHONPATH")] if p]
            )
        environ.update(env)
        with open(self.log, "wb") as out:
            self.process = lifeline.popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    str(examples),
                    "results_service:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    environ.get("RESULTS_LOG_LEVEL", "warning").lower(),
                ],
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        try:
            wait_until_ready(f"{self.url}/healthz", timeout=60, what="results service")
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def call(self, method: str, path: str, token: str | None, **kwargs: Any) -> Any:
        """One HTTP request with ``Authorization: Bearer <token>`` (none when ``token`` is None)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.request(method, self.url + path, headers=headers, timeout=120, **kwargs)

    def read_log(self) -> str:
        return self.log.read_text("utf-8", errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)

    def __enter__(self) -> ResultsService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["EXAMPLES", "ResultsService"]
