"""A token handed in from outside (``TERRAPI_TOKEN``): used as is, never refreshed."""

from __future__ import annotations

from datetime import datetime

from sts_bridge.auth.base import Token, TokenCredentials, unverified_claims
from sts_bridge.clock import Clock
from sts_bridge.errors import TokenExpiredError

__all__ = ["StaticToken"]


class StaticToken(TokenCredentials):
    """A fixed access token (e.g. from ``TERRAPI_TOKEN``).

    The expiry comes from ``expiry`` or, for a JWT, its ``exp`` claim.
    :meth:`token` raises :class:`~sts_bridge.errors.TokenExpiredError` once
    it has expired: nothing here can refresh it.
    """

    def __init__(
        self,
        access_token: str,
        *,
        expiry: datetime | None = None,
        leeway: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(leeway=leeway, clock=clock)
        if not access_token or not access_token.strip():
            raise ValueError("empty token")
        access_token = access_token.strip()
        if expiry is None:
            exp = unverified_claims(access_token).get("exp")
            if isinstance(exp, (int, float)):
                expiry = Token.from_response(
                    {"access_token": access_token, "expires_at": exp}, now=self.now()
                ).expiry
        self._token = Token(access_token=access_token, expiry=expiry)
        self._refused = False

    def invalidate(self) -> None:
        """The API refused the token: nothing can replace it, so say that, not "expired"."""
        self._refused = True
        super().invalidate()

    def _fetch(self, current: Token | None) -> Token:
        if self._refused:
            raise TokenExpiredError(
                "the API refused the access token given in TERRAPI_TOKEN "
                "(not a valid token for this API, or revoked)",
                hint="set TERRAPI_TOKEN to a valid access token, or unset it and "
                "use `sts-bridge login`",
            )
        when = current.expiry.isoformat() if current and current.expiry else "an unknown time"
        raise TokenExpiredError(f"the access token given in TERRAPI_TOKEN expired at {when}")

    def _check_arrival(self, token: Token) -> None:
        pass
