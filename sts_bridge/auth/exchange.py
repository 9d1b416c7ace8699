"""Act for a caller: RFC 8693 token exchange, and the caller's token forwarded as is.

A service receives a user's token addressed to *the service*. To call
TerrAPI for that user it needs a token addressed to *TerrAPI*:

* :class:`TokenExchange` posts the token-exchange grant (through authlib's
  ``OAuth2Session``, as the service's confidential client) and gets an
  access token for the API's audience/resource with the scopes the service
  asks for (the provider narrows them to what the presented token holds);
* :class:`ExchangedTokenCredentials` is one user's source of such tokens:
  exchanged once, used until the leeway before expiry, then exchanged
  again with the newest caller token :meth:`~ExchangedTokenCredentials.offer`
  handed in. :class:`TokenCredentials` holds its lock, so many concurrent
  requests of one user cause one exchange;
* :class:`ForwardedTokenCredentials` hands the caller's own token to the API
  unchanged, for platforms whose API accepts the service's audience (off
  unless asked for).

Both refuse a token of another subject than the user they were built for:
nothing of one user is ever used for another.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from sts_bridge.auth.base import DEFAULT_LEEWAY, Token, TokenCredentials, unverified_claims
from sts_bridge.clock import Clock, CredentialState
from sts_bridge.errors import (
    CallerRefusedError,
    InvalidGrantError,
    TokenExchangeError,
)

if TYPE_CHECKING:
    from sts_bridge.auth.oauth import OAuthClient

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "TOKEN_EXCHANGE_GRANT",
    "ExchangedTokenCredentials",
    "ForwardedTokenCredentials",
    "TokenExchange",
]

logger = logging.getLogger("sts_bridge.auth")

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105


class TokenExchange:
    """The token-exchange grant of one confidential client at one issuer.

    :param oauth: the service's :class:`~sts_bridge.auth.oauth.OAuthClient`
        (client id + secret, the provider's endpoints, TLS settings).
    :param audience: the API's audience, sent as ``resource`` (RFC 8707) or
        ``audience`` (Keycloak) as ``oauth.audience_param`` says.
    :param scopes: the scopes the service asks for (``()``: those of the
        presented token).
    """

    def __init__(
        self, oauth: OAuthClient, *, audience: str | None = None, scopes: Sequence[str] = ()
    ) -> None:
        self.oauth = oauth
        self.audience = audience if audience is not None else oauth.audience
        self.scopes = tuple(scopes)
        self.calls = 0  # exchanges posted (tests and benchmarks count them)

    def __repr__(self) -> str:
        return f"TokenExchange(client_id={self.oauth.client_id!r}, audience={self.audience!r})"

    def exchange(self, subject_token: str, *, now: datetime) -> Token:
        """A token for the API acting for the subject of ``subject_token``.

        Raises :class:`~sts_bridge.errors.CallerRefusedError` (401
        ``invalid_token``) when the provider refuses the presented token
        (``invalid_grant``: revoked, expired, not addressed to this client),
        which is the caller's to fix; the service's own problems stay other
        :class:`~sts_bridge.errors.AuthError` kinds (``InvalidClientError``:
        this client may not exchange) or
        :class:`~sts_bridge.errors.ProviderUnreachableError`.
        """
        params = {
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
        }
        if self.audience:
            params[self.oauth.audience_param] = self.audience
        if self.scopes:
            params["scope"] = " ".join(self.scopes)
        self.calls += 1
        try:
            return self.oauth.request_token(TOKEN_EXCHANGE_GRANT, now=now, **params)
        except InvalidGrantError as exc:
            described = getattr(exc, "oauth_description", None) or "invalid_grant"
            why = (described.splitlines() or ["invalid_grant"])[0][:200]
            raise CallerRefusedError(
                f"the identity provider refused to exchange the caller's token: {why}"
            ) from exc


class _CallerTokenCredentials(TokenCredentials):
    """What both kinds share: one subject, the newest caller token of that subject."""

    def __init__(
        self,
        subject: str,
        caller_token: str,
        *,
        leeway: float = DEFAULT_LEEWAY,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(leeway=leeway, clock=clock)
        if not subject:
            raise ValueError("the caller's subject is required")
        self.expected_subject = subject
        self._caller_token = caller_token

    def offer(self, caller_token: str) -> None:
        """The caller's newest (already verified) token, used at the next exchange."""
        self._caller_token = caller_token

    @property
    def subject(self) -> str | None:
        return self.expected_subject

    def _same_subject(self, token: Token, what: str) -> Token:
        sub = unverified_claims(token.access_token).get("sub")
        if sub is not None and sub != self.expected_subject:
            raise TokenExchangeError(f"the {what} token names another subject than the caller")
        return token


class ExchangedTokenCredentials(_CallerTokenCredentials):
    """One user's API tokens, obtained by exchanging that user's token (see the module)."""

    def __init__(
        self,
        exchange: TokenExchange,
        subject: str,
        caller_token: str,
        *,
        leeway: float = DEFAULT_LEEWAY,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(subject, caller_token, leeway=leeway, clock=clock)
        self._exchange = exchange

    def _fetch(self, current: Token | None) -> Token:
        token = self._exchange.exchange(self._caller_token, now=self.now())
        return self._same_subject(token, "exchanged")


class ForwardedTokenCredentials(_CallerTokenCredentials):
    """The caller's own token, handed to the API unchanged (its newest one).

    One that has expired (or expires within the leeway) is refused with
    :class:`~sts_bridge.errors.CallerRefusedError` (401 ``invalid_token``):
    the caller has to present a fresh one.
    """

    def _fetch(self, current: Token | None) -> Token:
        raw = self._caller_token
        exp = unverified_claims(raw).get("exp")
        expiry = (
            datetime.fromtimestamp(float(exp), timezone.utc)
            if isinstance(exp, (int, float))
            else None
        )
        token = Token(access_token=raw, expiry=expiry, obtained_at=self.now())
        if self.state_of(token) is not CredentialState.FRESH:
            # The caller's to fix, like a token the issuer refuses to exchange: 401.
            raise CallerRefusedError(
                "the caller's token has expired (or expires within the leeway); present a fresh one"
            )
        return self._same_subject(token, "forwarded")

    def _check_arrival(self, token: Token) -> None:
        pass  # the caller's token was verified when it arrived
