"""Authorization code + PKCE (S256) with a loopback redirect (RFC 8252).

A one-shot HTTP server on ``http://127.0.0.1:{free port}/callback`` receives
the code; ``state`` (CSRF) and ``nonce`` (ID token replay) are checked, the
ID token is validated against the provider's JWKS (signature, ``iss``,
``aud``, ``exp``, ``nonce``). When no browser can be opened the login falls
back to the device flow.
"""

from __future__ import annotations

import html
import logging
import os
import secrets
import sys
import threading
import time
import webbrowser
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from sts_bridge.auth.base import Token
from sts_bridge.auth.device import Prompt, run_device_flow
from sts_bridge.auth.discovery import unreachable
from sts_bridge.auth.oauth import map_oauth_error
from sts_bridge.auth.refresh import UserCredentials
from sts_bridge.config import trusted_cas
from sts_bridge.errors import AuthError, ConfigurationError, LoginTimeoutError

__all__ = ["BrowserCredentials", "OpenBrowser", "default_open_browser", "validate_id_token"]

logger = logging.getLogger("sts_bridge.auth")

#: Opens a URL for the person; returns ``False`` when no browser could be opened.
OpenBrowser = Callable[[str], bool]

_LANDING = (
    "<!doctype html><html><head><meta charset='utf-8'><title>sts-bridge</title></head>"
    "<body style='font-family:sans-serif;margin:3em'><h1>{title}</h1><p>{text}</p></body></html>"
)


def default_open_browser(url: str) -> bool:
    """Open ``url`` in the person's browser; ``False`` on a machine without a display."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False  # text browsers would take over the terminal; use the device flow
    try:
        return bool(webbrowser.open(url, new=1, autoraise=True))
    except webbrowser.Error:
        return False


class _Callback:
    def __init__(self) -> None:
        self.params: dict[str, str] | None = None
        self.done = threading.Event()


def _make_handler(result: _Callback, expected_state: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != "/callback":
                self.send_error(404)
                return
            params = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if params.get("state") != expected_state:
                # Not our login (or a forged redirect): ignore it, keep waiting.
                self._page(400, "Login failed", "This login request is not the one in progress.")
                return
            if "error" in params:
                self._page(
                    200, "Login refused", "You can close this tab and return to the terminal."
                )
            else:
                self._page(200, "Logged in", "You can close this tab and return to the terminal.")
            result.params = params
            result.done.set()

        def _page(self, status: int, title: str, text: str) -> None:
            body = _LANDING.format(title=html.escape(title), text=html.escape(text)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the query string carries the authorization code: never log it

    return Handler


def validate_id_token(
    id_token: str,
    *,
    jwks: dict[str, Any],
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: datetime,
    leeway: float,
) -> dict[str, Any]:
    """Verify the signature and claims of an ID token; its claims.

    Raises :class:`~sts_bridge.errors.AuthError` naming the failed check.
    """
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    def fail(reason: str) -> AuthError:
        return AuthError(
            f"the ID token from the identity provider is not valid: {reason}",
            hint="check TERRAPI_ISSUER and the machine's clock, then log in again",
        )

    try:
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        decoded = jwt.decode(
            id_token, keys, algorithms=["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]
        )
    except (JoseError, ValueError, TypeError) as exc:
        raise fail(f"signature check failed ({type(exc).__name__})") from None
    claims = dict(decoded.claims)
    if str(claims.get("iss", "")).rstrip("/") != issuer.rstrip("/"):
        raise fail("wrong issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else list(aud or [])
    if client_id not in audiences:
        raise fail("issued for another client (aud)")
    if len(audiences) > 1 and claims.get("azp") not in (None, client_id):
        raise fail("issued for another client (azp)")
    skew = timedelta(seconds=leeway)
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)):
        raise fail("no exp claim")
    if datetime.fromtimestamp(exp, timezone.utc) + skew < now:
        raise fail("expired (exp)")
    iat = claims.get("iat")
    if isinstance(iat, (int, float)) and datetime.fromtimestamp(iat, timezone.utc) - skew > now:
        raise fail("issued in the future (iat): check the clock")
    if nonce is not None and claims.get("nonce") != nonce:
        raise fail("nonce mismatch (a replayed login?)")
    return claims


class BrowserCredentials(UserCredentials):
    """A person's login in the browser (auth code + PKCE), then refreshed.

    :param open_browser: opens the authorization URL; returns ``False`` when
        it cannot (then the device flow runs, if ``fallback_to_device``).
        Tests pass a helper that completes the login with a username/password.
    :param login_timeout: seconds to wait for the redirect.
    :param prompt: the device-flow prompt used by the fallback.
    :param interactive: when ``False``, a missing login raises
        :class:`~sts_bridge.errors.LoginRequiredError`.
    """

    def __init__(
        self,
        *args: Any,
        open_browser: OpenBrowser | None = None,
        login_timeout: float = 300.0,
        fallback_to_device: bool = True,
        prompt: Prompt | None = None,
        interactive: bool = True,
        port: int = 0,
        sleep: Callable[[float], None] = time.sleep,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.open_browser = open_browser or default_open_browser
        self.login_timeout = login_timeout
        self.fallback_to_device = fallback_to_device
        self.prompt = prompt
        self.interactive = interactive
        self.port = port
        self._sleep = sleep

    def login(self) -> Token:
        interactive, self.interactive = self.interactive, True
        try:
            return super().login()
        finally:
            self.interactive = interactive

    def _login(self) -> Token:
        if not self.interactive:
            return super()._login()
        metadata = self.oauth.metadata
        if not metadata.authorization_endpoint:
            raise ConfigurationError(
                f"the identity provider {metadata.issuer} offers no browser login",
                hint="use `sts-bridge login --flow device`",
            )
        result = _Callback()
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        server = HTTPServer(("127.0.0.1", self.port), _make_handler(result, state))
        server.timeout = 0.2
        port = server.server_address[1]
        redirect_uri = f"http://127.0.0.1:{port}/callback"
        thread = threading.Thread(target=server.serve_forever, name="sts-bridge-login", daemon=True)
        thread.start()
        try:
            extra: dict[str, Any] = dict(self.oauth.audience_params())
            if "offline_access" in self.login_scopes:
                extra["prompt"] = "consent"  # providers only issue a refresh token after consent
            url, _ = self.oauth.session.create_authorization_url(
                metadata.authorization_endpoint,
                state=state,
                code_verifier=verifier,
                nonce=nonce,
                redirect_uri=redirect_uri,
                scope=" ".join(self.login_scopes),
                **extra,
            )
            print("Opening the login page in your browser...", file=sys.stderr)
            if not self.open_browser(url):
                if not self.fallback_to_device:
                    raise AuthError(
                        "no browser could be opened for the login",
                        hint="run `sts-bridge login --flow device`",
                    )
                logger.info("no browser available: falling back to the device flow")
                server.shutdown()
                return run_device_flow(
                    self.oauth,
                    self.login_scopes,
                    clock=self.now,
                    prompt=self.prompt,
                    sleep=self._sleep,
                )
            print(f"If it did not open, visit: {url}", file=sys.stderr)
            if not result.done.wait(self.login_timeout):
                raise LoginTimeoutError(
                    f"the browser login was not completed within {self.login_timeout:.0f} s"
                )
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        params = result.params or {}
        if "error" in params:
            raise map_oauth_error(params["error"], params.get("error_description"), "browser login")
        code = params.get("code")
        if not code:
            raise AuthError("the browser login returned no authorization code")
        token = self.oauth.request_token(
            "authorization_code",
            now=self.now(),
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=verifier,
            **self.oauth.audience_params(),
        )
        if not token.id_token:
            raise AuthError("the identity provider returned no ID token for the browser login")
        self._validate(token.id_token, nonce)
        return token

    def _validate(self, id_token: str, nonce: str) -> None:
        metadata = self.oauth.metadata
        if not metadata.jwks_uri:
            raise AuthError(
                "the identity provider publishes no jwks_uri: cannot check the ID token"
            )
        try:
            response = requests.get(
                metadata.jwks_uri, verify=trusted_cas(self.verify), timeout=self.timeout
            )
            response.raise_for_status()
            jwks = response.json()
        except requests.RequestException as exc:
            raise unreachable("JWKS", metadata.jwks_uri, exc) from None
        except ValueError:
            raise AuthError("the identity provider's JWKS is not JSON") from None
        validate_id_token(
            id_token,
            jwks=jwks,
            issuer=metadata.issuer,
            client_id=self.client_id,
            nonce=nonce,
            now=self.now(),
            leeway=max(self.leeway, 5.0),
        )
