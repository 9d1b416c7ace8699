"""Access tokens for TerrAPI: every OIDC flow, the token cache. Imports: config, errors, base.

>>> from sts_bridge.config import load_settings
>>> from sts_bridge.auth import credentials_from_settings
>>> creds = credentials_from_settings(load_settings(), interactive=False)  # doctest: +SKIP
>>> creds.token()  # always valid; refreshed once for all threads and processes  # doctest: +SKIP

The public names are imported on first access (PEP 562): the flows pull in
authlib, requests, joserfc/cryptography and http.server, which a command
that finds a valid token in the cache never needs (``import sts_bridge.auth``
costs only :mod:`sts_bridge.auth.base`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sts_bridge._lazy import lazy_exports
from sts_bridge.auth.base import (
    DEFAULT_LEEWAY,
    Token,
    TokenCredentials,
    unverified_claims,
)
from sts_bridge.clock import Clock, CredentialState, utc_now

if TYPE_CHECKING:
    from sts_bridge.auth.authenticator import (
        Authenticator,
        AuthenticatorCredentials,
        load_authenticator,
    )
    from sts_bridge.auth.browser import BrowserCredentials, OpenBrowser, validate_id_token
    from sts_bridge.auth.cache import TokenCache
    from sts_bridge.auth.client_credentials import ClientCredentials
    from sts_bridge.auth.command import CommandToken
    from sts_bridge.auth.device import (
        DeviceAuthorization,
        DeviceCodeCredentials,
        Prompt,
        default_prompt,
    )
    from sts_bridge.auth.discovery import ProviderMetadata, discover
    from sts_bridge.auth.factory import credentials_from_settings, logout, token_cache_for
    from sts_bridge.auth.oauth import OAuthClient
    from sts_bridge.auth.provider import ProviderCredentials
    from sts_bridge.auth.refresh import RefreshTokenCredentials, UserCredentials
    from sts_bridge.auth.static import StaticToken

#: public name -> the module that defines it (imported on first access)
_LAZY = {
    "Authenticator": "sts_bridge.auth.authenticator",
    "AuthenticatorCredentials": "sts_bridge.auth.authenticator",
    "load_authenticator": "sts_bridge.auth.authenticator",
    "BrowserCredentials": "sts_bridge.auth.browser",
    "OpenBrowser": "sts_bridge.auth.browser",
    "validate_id_token": "sts_bridge.auth.browser",
    "TokenCache": "sts_bridge.auth.cache",
    "ClientCredentials": "sts_bridge.auth.client_credentials",
    "CommandToken": "sts_bridge.auth.command",
    "DeviceAuthorization": "sts_bridge.auth.device",
    "DeviceCodeCredentials": "sts_bridge.auth.device",
    "Prompt": "sts_bridge.auth.device",
    "default_prompt": "sts_bridge.auth.device",
    "ProviderMetadata": "sts_bridge.auth.discovery",
    "discover": "sts_bridge.auth.discovery",
    "credentials_from_settings": "sts_bridge.auth.factory",
    "logout": "sts_bridge.auth.factory",
    "token_cache_for": "sts_bridge.auth.factory",
    "OAuthClient": "sts_bridge.auth.oauth",
    "ProviderCredentials": "sts_bridge.auth.provider",
    "RefreshTokenCredentials": "sts_bridge.auth.refresh",
    "UserCredentials": "sts_bridge.auth.refresh",
    "StaticToken": "sts_bridge.auth.static",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = [
    "DEFAULT_LEEWAY",
    "Authenticator",
    "AuthenticatorCredentials",
    "BrowserCredentials",
    "ClientCredentials",
    "Clock",
    "CommandToken",
    "CredentialState",
    "DeviceAuthorization",
    "DeviceCodeCredentials",
    "OAuthClient",
    "OpenBrowser",
    "Prompt",
    "ProviderCredentials",
    "ProviderMetadata",
    "RefreshTokenCredentials",
    "StaticToken",
    "Token",
    "TokenCache",
    "TokenCredentials",
    "UserCredentials",
    "credentials_from_settings",
    "default_prompt",
    "discover",
    "load_authenticator",
    "logout",
    "token_cache_for",
    "unverified_claims",
    "utc_now",
    "validate_id_token",
]
