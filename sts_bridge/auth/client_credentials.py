"""The client credentials grant: a service authenticates as itself."""

from __future__ import annotations

from sts_bridge.auth.base import Token
from sts_bridge.auth.provider import ProviderCredentials

__all__ = ["ClientCredentials"]


class ClientCredentials(ProviderCredentials):
    """Access tokens for a confidential client (``TERRAPI_CLIENT_ID`` + ``TERRAPI_CLIENT_SECRET``).

    A new token is requested when the current one is about to expire; no
    refresh token is involved. :meth:`token` raises
    :class:`~sts_bridge.errors.InvalidClientError` when the id or secret is
    refused and :class:`~sts_bridge.errors.ProviderUnreachableError` when
    the provider does not answer.
    """

    def _fetch(self, current: Token | None) -> Token:
        return self.oauth.client_credentials(self.scopes, now=self.now())
