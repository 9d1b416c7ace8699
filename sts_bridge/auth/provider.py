"""Shared base of the flows that talk to an OpenID provider.

authlib and requests (:mod:`sts_bridge.auth.oauth`) and discovery
(:mod:`sts_bridge.auth.discovery`) are imported by
:attr:`ProviderCredentials.oauth`, i.e. when the provider is first
contacted: building credentials that find a valid token in the cache costs
no heavy import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sts_bridge.auth.base import DEFAULT_LEEWAY, TokenCredentials
from sts_bridge.clock import Clock

if TYPE_CHECKING:
    from sts_bridge.auth.cache import TokenCache
    from sts_bridge.auth.discovery import ProviderMetadata
    from sts_bridge.auth.oauth import OAuthClient

__all__ = ["ProviderCredentials"]


class ProviderCredentials(TokenCredentials):
    """Credentials obtained from an OpenID provider (discovered lazily, on first use).

    :param issuer: the issuer URL, or already discovered :class:`ProviderMetadata`.
    :param client_id: the OAuth client id.
    :param client_secret: for confidential clients only.
    :param scopes: scopes to ask for (flows add what they need, e.g. ``openid``).
    :param audience: the API audience (sent as RFC 8707 ``resource``).
    :param verify: TLS verification: ``True``, ``False`` or a CA bundle path.
    """

    def __init__(
        self,
        issuer: str | ProviderMetadata,
        client_id: str,
        client_secret: str | None = None,
        *,
        scopes: Sequence[str] = (),
        audience: str | None = None,
        verify: bool | str = True,
        timeout: float = 30.0,
        leeway: float = DEFAULT_LEEWAY,
        clock: Clock | None = None,
        cache: TokenCache | None = None,
        audience_param: str = "resource",
    ) -> None:
        super().__init__(leeway=leeway, clock=clock, cache=cache)
        self._issuer = issuer
        self.client_id = client_id
        self._client_secret = client_secret
        self.scopes = tuple(dict.fromkeys(scopes))
        self.audience = audience
        self.verify = verify
        self.timeout = timeout
        self.audience_param = audience_param
        self._oauth: OAuthClient | None = None

    @property
    def issuer(self) -> str:
        # A str test, not isinstance(ProviderMetadata): a warm command that
        # finds its token in the cache does not import discovery (issue 19).
        if isinstance(self._issuer, str):
            return self._issuer.rstrip("/")
        return self._issuer.issuer

    @property
    def metadata(self) -> ProviderMetadata:
        return self.oauth.metadata

    @property
    def oauth(self) -> OAuthClient:
        """The :class:`OAuthClient` (runs discovery the first time)."""
        if self._oauth is None:
            from sts_bridge.auth.discovery import discover
            from sts_bridge.auth.oauth import OAuthClient

            metadata = (
                discover(self._issuer, verify=self.verify, timeout=self.timeout)
                if isinstance(self._issuer, str)
                else self._issuer
            )
            self._oauth = OAuthClient(
                metadata,
                self.client_id,
                self._client_secret,
                verify=self.verify,
                timeout=self.timeout,
                audience=self.audience,
                audience_param=self.audience_param,
            )
        return self._oauth

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(issuer={self.issuer!r}, client_id={self.client_id!r}, "
            f"state={self.state!r}, expiry={self.expiry!r})"
        )
