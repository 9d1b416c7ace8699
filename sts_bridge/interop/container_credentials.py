"""A loopback endpoint speaking the AWS container-credentials protocol.

Worker processes and containers started by a job get fresh workspace
credentials from it (``AWS_CONTAINER_CREDENTIALS_FULL_URI`` plus
``AWS_CONTAINER_AUTHORIZATION_TOKEN``), a protocol every AWS SDK speaks, and
never see the user's refresh token: the delegation a background job needs.

Every answer is a valid snapshot of the workspace's refreshing credentials,
so a child that runs longer than one STS lifetime keeps working.

- :class:`CredentialsEndpoint` serves documents from any zero-argument
  source (the GDAL relay's helper process serves the snapshots its parent
  pushes, see :mod:`sts_bridge.interop.credentials_relay`).
- :class:`ContainerCredentialsServer` serves one workspace's credentials.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from sts_bridge.errors import StsBridgeError
from sts_bridge.interop.tool_credentials import container_credentials_document, endpoint_assignments

if TYPE_CHECKING:
    from sts_bridge.workspace import Workspace

log = logging.getLogger(__name__)

CREDENTIALS_PATH = "/credentials"

DocumentSource = Callable[[], dict[str, Any]]


class _QuietServer(ThreadingHTTPServer):
    """The stdlib server, minus its habit of printing a traceback per failed request.

    ``socketserver`` writes a full traceback to stderr whenever a handler
    raises, e.g. a broken pipe from a local client that hung up, so any
    local process could flood the job's stderr. One short log line instead.
    """

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("credentials endpoint: client went away (%s)", type(exc).__name__)
        else:
            log.warning("credentials endpoint: request failed (%s)", type(exc).__name__)


class CredentialsEndpoint:
    """Serve ``source()`` on ``http://127.0.0.1:<port>/credentials`` to bearers of ``auth_token``.

    ``source`` returns a container-credentials document; it may raise
    :class:`~sts_bridge.errors.StsBridgeError`, answered as HTTP 503.
    """

    def __init__(
        self,
        source: DocumentSource,
        *,
        auth_token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            # botocore only accepts plain http from loopback addresses, and the
            # credentials must never be served to the network.
            raise ValueError("the credentials endpoint only listens on loopback")
        self._source = source
        self.auth_token = auth_token or secrets.token_urlsafe(32)
        self.requests_served = 0
        self._server = _QuietServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://{host}:{port}{CREDENTIALS_PATH}"

    def start(self) -> CredentialsEndpoint:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sts-bridge-credentials", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __repr__(self) -> str:
        return f"CredentialsEndpoint(url={self.url!r})"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "sts-bridge"

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != CREDENTIALS_PATH:
                    self._send(404, {"message": "not found"})
                    return
                given = self.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), outer.auth_token.encode()):
                    self._send(403, {"message": "missing or wrong authorization token"})
                    return
                try:
                    doc = outer._source()
                except StsBridgeError as exc:
                    log.warning("could not refresh workspace credentials: %s", exc.message)
                    self._send(503, {"message": exc.message})
                    return
                outer.requests_served += 1
                self._send(200, doc)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                # The default handler logs to stderr; keep quiet (no secrets
                # are in the request line, but children call it often).
                log.debug("credentials endpoint: " + format, *args)

        return Handler


class ContainerCredentialsServer:
    """Serve ``workspace``'s credentials on ``http://127.0.0.1:<port>/credentials``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    ``env()`` is what a child process needs in its environment.
    """

    def __init__(self, workspace: Workspace, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._workspace = workspace
        self._endpoint = CredentialsEndpoint(
            lambda: container_credentials_document(workspace.credentials()), host=host, port=port
        )

    @property
    def url(self) -> str:
        return self._endpoint.url

    @property
    def requests_served(self) -> int:
        return self._endpoint.requests_served

    def env(self) -> dict[str, str]:
        """Environment for a child process: credentials endpoint, endpoint, region."""
        env = {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": self.url,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": self._endpoint.auth_token,
        }
        env.update(endpoint_assignments(self._workspace))
        return env

    def start(self) -> ContainerCredentialsServer:
        self._endpoint.start()
        return self

    def stop(self) -> None:
        self._endpoint.stop()

    def __enter__(self) -> ContainerCredentialsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ContainerCredentialsServer(workspace={self._workspace.name!r}, url={self.url!r})"
