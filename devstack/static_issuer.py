"""A minimal OIDC issuer for tests that need signed tokens without Node.

It serves only discovery and a JWKS (one RS256 key with ``x5c``, as radosgw
wants) on a free loopback port, and signs whatever claims a test asks for.
The full identity provider (flows, users, pages) is :mod:`.idp`.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

from .keys import generate_signing_jwk, public_jwk
from .ports import free_port


class StaticIssuer:
    """Discovery + JWKS on ``http://127.0.0.1:<port>``; :meth:`token` signs.

    ``requests`` records the paths served (radosgw fetches both on every
    AssumeRoleWithWebIdentity). Use as a context manager or start()/stop().
    """

    def __init__(self, audience: str) -> None:
        self.audience = audience
        self.private_jwk = generate_signing_jwk()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[str] = []
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.requests.append(self.path)
                if self.path == "/.well-known/openid-configuration":
                    body: dict[str, Any] = {
                        "issuer": issuer.url,
                        "jwks_uri": f"{issuer.url}/jwks",
                        "authorization_endpoint": f"{issuer.url}/auth",
                        "token_endpoint": f"{issuer.url}/token",
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }
                elif self.path == "/jwks":
                    body = {"keys": [public_jwk(issuer.private_jwk)]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> StaticIssuer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> StaticIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def token(
        self,
        *,
        sub: str = "alice",
        aud: str | list[str] | None = None,
        lifetime: float = 300,
        iss: str | None = None,
        **claims: Any,
    ) -> str:
        """An RS256 JWT from this issuer (``aud`` defaults to the audience)."""
        now = int(time.time())
        payload = {
            "iss": iss or self.url,
            "sub": sub,
            "aud": self.audience if aud is None else aud,
            "azp": self.audience,
            "iat": now,
            "exp": now + int(lifetime),
            **claims,
        }
        key = jwt.PyJWK(self.private_jwk).key
        return jwt.encode(payload, key, algorithm="RS256", headers={"kid": self.private_jwk["kid"]})
