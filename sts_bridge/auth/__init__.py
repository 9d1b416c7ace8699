"""Access tokens for TerrAPI: one :class:`TokenCredentials` abstraction, every flow.

>>> from sts_bridge.config import load_settings
>>> from sts_bridge.auth import credentials_from_settings
>>> creds = credentials_from_settings(load_settings(), interactive=False)  # doctest: +SKIP
>>> creds.token()  # always valid; refreshed once for all threads and processes  # doctest: +SKIP
"""

from sts_bridge.auth.authenticator import (
    Authenticator,
    AuthenticatorCredentials,
    load_authenticator,
)
from sts_bridge.auth.base import (
    DEFAULT_LEEWAY,
    Clock,
    Token,
    TokenCredentials,
    TokenState,
    unverified_claims,
    utc_now,
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

__all__ = [
    "DEFAULT_LEEWAY",
    "Authenticator",
    "AuthenticatorCredentials",
    "BrowserCredentials",
    "ClientCredentials",
    "Clock",
    "CommandToken",
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
    "TokenState",
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
