"""The token endpoint through authlib, with provider errors mapped to ours.

authlib's ``OAuth2Session`` does the protocol work (client authentication,
PKCE, form encoding); this wrapper adds what it lacks for us: TLS settings
on every call, a timeout, tokens built with our clock, no scope re-sent on
refresh (see ``docs``: the provider answers ``invalid_scope`` when the
session scope contains ``offline_access``), and one error class per cause
with a message that never contains a token or secret.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session

from sts_bridge._redact import redact
from sts_bridge.auth.base import Token
from sts_bridge.auth.discovery import ProviderMetadata, unreachable
from sts_bridge.config import trusted_cas
from sts_bridge.errors import (
    AccessDeniedError,
    AuthError,
    InvalidClientError,
    InvalidGrantError,
    LoginTimeoutError,
    ProviderUnreachableError,
)

__all__ = ["OAuthClient", "map_oauth_error"]

logger = logging.getLogger("sts_bridge.auth")


def map_oauth_error(error: str | None, description: str | None, what: str) -> AuthError:
    """Our exception for an OAuth ``error`` code; the code is kept as ``.oauth_error``,
    the provider's (redacted) description as ``.oauth_description``."""
    exc = _map_oauth_error(error, description, what)
    exc.oauth_error = error  # type: ignore[attr-defined]
    exc.oauth_description = redact(description) if description else None  # type: ignore[attr-defined]
    return exc


def _map_oauth_error(error: str | None, description: str | None, what: str) -> AuthError:
    detail = f": {redact(description)}" if description else ""
    if error == "invalid_client" or error == "unauthorized_client":
        return InvalidClientError(f"the identity provider refused the client ({what}){detail}")
    if error == "invalid_grant":
        return InvalidGrantError(
            f"the identity provider refused the grant ({what}): the login expired or was "
            f"revoked{detail}"
        )
    if error == "access_denied":
        return AccessDeniedError(f"the login was refused ({what}){detail}")
    if error == "expired_token":
        return LoginTimeoutError(f"the login code expired before it was approved ({what})")
    if error == "invalid_scope":
        return AuthError(
            f"the identity provider refused the requested scopes ({what}){detail}",
            hint="check TERRAPI_SCOPES against the scopes your client may ask for",
        )
    if error in ("invalid_target", "invalid_resource"):
        return AuthError(
            f"the identity provider refused the requested audience ({what}){detail}",
            hint="check TERRAPI_AUDIENCE",
        )
    return AuthError(f"the identity provider answered {error or 'an error'} ({what}){detail}")


class OAuthClient:
    """A client (id, optional secret) talking to one provider's endpoints.

    Not thread-safe on its own: :class:`TokenCredentials` calls it under its lock.
    """

    def __init__(
        self,
        metadata: ProviderMetadata,
        client_id: str,
        client_secret: str | None = None,
        *,
        verify: bool | str = True,
        timeout: float = 30.0,
        audience: str | None = None,
        audience_param: str = "resource",
    ) -> None:
        self.metadata = metadata
        self.client_id = client_id
        self._client_secret = client_secret
        self.verify = verify
        self.timeout = timeout
        self.audience = audience
        self.audience_param = audience_param
        self._session: OAuth2Session | None = None

    def __repr__(self) -> str:
        return (
            f"OAuthClient(issuer={self.metadata.issuer!r}, client_id={self.client_id!r}, "
            f"confidential={self._client_secret is not None})"
        )

    @property
    def confidential(self) -> bool:
        return self._client_secret is not None

    @property
    def session(self) -> OAuth2Session:
        if self._session is None:
            session = OAuth2Session(
                client_id=self.client_id,
                client_secret=self._client_secret,
                token_endpoint_auth_method=(
                    "client_secret_basic" if self._client_secret else "none"
                ),
                revocation_endpoint_auth_method=(
                    "client_secret_basic" if self._client_secret else "none"
                ),
                scope=None,  # never re-sent on refresh
                code_challenge_method="S256",
                default_timeout=self.timeout,
            )
            session.verify = trusted_cas(self.verify)  # the one CA rule, not certifi's
            self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def audience_params(self) -> dict[str, str]:
        return {self.audience_param: self.audience} if self.audience else {}

    @contextmanager
    def _calling(self, what: str, url: str) -> Iterator[None]:
        try:
            yield
        except OAuthError as exc:
            raise map_oauth_error(
                getattr(exc, "error", None), getattr(exc, "description", None), what
            ) from None
        except requests.RequestException as exc:
            raise unreachable(what, url, exc) from None
        except ValueError as exc:
            raise ProviderUnreachableError(
                f"the identity provider sent an answer sts-bridge cannot read "
                f"({what}: {redact(str(exc))})"
            ) from None

    def request_token(self, grant_type: str, *, now: datetime, **params: Any) -> Token:
        """POST to the token endpoint with ``grant_type`` and ``params``; a :class:`Token`."""
        url = self.metadata.token_endpoint
        with self._calling(grant_type.rsplit(":", 1)[-1].replace("_", " "), url):
            answer = self.session.fetch_token(
                url, grant_type=grant_type, timeout=self.timeout, **params
            )
            return Token.from_response(dict(answer), now=now)

    def client_credentials(self, scopes: Sequence[str], *, now: datetime) -> Token:
        params: dict[str, Any] = dict(self.audience_params())
        if scopes:
            params["scope"] = " ".join(scopes)
        return self.request_token("client_credentials", now=now, **params)

    def refresh(self, current: Token, *, now: datetime) -> Token:
        """Use ``current.refresh_token``; the answer keeps it unless the provider rotated it.

        No ``scope`` is sent: the provider then grants the scope of the
        original grant (RFC 6749 section 6).
        """
        if not current.refresh_token:
            raise InvalidGrantError("there is no refresh token to use")
        url = self.metadata.token_endpoint
        with self._calling("refresh", url):
            answer = self.session.refresh_token(
                url,
                refresh_token=current.refresh_token,
                timeout=self.timeout,
                **self.audience_params(),
            )
            token = Token.from_response(dict(answer), now=now)
        if token.refresh_token is None or token.refresh_token == current.refresh_token:
            logger.debug("refresh token not rotated by the provider")
        if token.refresh_token is None:
            token = _with(token, refresh_token=current.refresh_token)
        if token.id_token is None and current.id_token:
            token = _with(token, id_token=current.id_token)
        return token

    def post_form(self, url: str, data: Mapping[str, str], what: str) -> dict[str, Any]:
        """POST a form with client authentication; the JSON answer (OAuth errors mapped)."""
        with self._calling(what, url):
            auth = self.session.client_auth(self.session.token_endpoint_auth_method)
            if not self._client_secret:
                data = {**data, "client_id": self.client_id}
            response = self.session.post(
                url,
                data=dict(data),
                auth=auth if self._client_secret else None,
                headers={"Accept": "application/json"},
                timeout=self.timeout,
                withhold_token=True,
            )
            if response.status_code >= 500:
                response.raise_for_status()
            body = response.json()
            if not isinstance(body, dict):
                raise ValueError(f"HTTP {response.status_code}, not a JSON object")
            if "error" in body:
                raise OAuthError(error=body["error"], description=body.get("error_description"))
            if response.status_code >= 400:
                response.raise_for_status()
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    def revoke(self, token: str, hint: str) -> bool:
        """Revoke ``token`` (RFC 7009); ``False`` when the provider has no endpoint."""
        url = self.metadata.revocation_endpoint
        if not url:
            return False
        with self._calling("revocation", url):
            data = {"token": token, "token_type_hint": hint}
            if not self._client_secret:
                data["client_id"] = self.client_id
            response = self.session.post(
                url,
                data=data,
                auth=(
                    self.session.client_auth(self.session.token_endpoint_auth_method)
                    if self._client_secret
                    else None
                ),
                timeout=self.timeout,
                withhold_token=True,
            )
            if response.status_code >= 400:
                try:
                    body = response.json()
                except ValueError:
                    body = {}
                if isinstance(body, dict) and "error" in body:
                    raise OAuthError(error=body["error"], description=body.get("error_description"))
                response.raise_for_status()
        return True


def _with(token: Token, **changes: Any) -> Token:
    from dataclasses import replace

    return replace(token, **changes)
