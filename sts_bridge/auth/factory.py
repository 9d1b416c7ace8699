"""Pick the flow from the settings: :func:`credentials_from_settings`.

The order (first match wins):

1. ``flow`` (``TERRAPI_FLOW`` / ``--flow``) when set and not ``auto``;
2. ``token`` (``TERRAPI_TOKEN``) -> :class:`StaticToken`;
3. ``token_command`` (``TERRAPI_TOKEN_COMMAND``) -> :class:`CommandToken`;
4. ``client_secret`` (``TERRAPI_CLIENT_SECRET``) -> :class:`ClientCredentials`;
5. a cached login for (issuer, client id, scopes, audience) -> refreshed;
6. interactive: a browser login (device code when no browser can be opened,
   or with ``no_browser``); otherwise :class:`LoginRequiredError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sts_bridge.auth.authenticator import AuthenticatorCredentials, load_authenticator
from sts_bridge.auth.base import TokenCredentials
from sts_bridge.auth.cache import TokenCache
from sts_bridge.auth.client_credentials import ClientCredentials
from sts_bridge.auth.delegation import refuse_login_in_delegated_process
from sts_bridge.auth.refresh import RefreshTokenCredentials, UserCredentials
from sts_bridge.auth.static import StaticToken
from sts_bridge.clock import Clock
from sts_bridge.config import Settings, require
from sts_bridge.errors import ConfigurationError, LoginRequiredError

if TYPE_CHECKING:
    # The interactive flows (http.server, webbrowser, joserfc) are imported
    # only when a login is about to run.
    from sts_bridge.auth.browser import OpenBrowser
    from sts_bridge.auth.device import Prompt

__all__ = ["credentials_from_settings", "logout", "token_cache_for"]


def token_cache_for(settings: Settings) -> TokenCache | None:
    """The token cache of these settings (``None`` when the cache is off or no issuer)."""
    if not settings.token_cache or not settings.issuer:
        return None
    return TokenCache(
        settings.cache_dir,
        issuer=settings.issuer,
        client_id=settings.client_id,
        scopes=settings.scopes,
        audience=settings.audience,
    )


def _provider_kwargs(settings: Settings, clock: Clock | None) -> dict[str, Any]:
    return {
        "scopes": settings.scopes,
        "audience": settings.audience,
        "verify": settings.verify,
        "leeway": settings.leeway,
        "clock": clock,
        "cache": token_cache_for(settings),
    }


def credentials_from_settings(
    settings: Settings,
    *,
    interactive: bool,
    no_browser: bool = False,
    prompt: Prompt | None = None,
    open_browser: OpenBrowser | None = None,
    clock: Clock | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> TokenCredentials:
    """The :class:`TokenCredentials` these settings call for (see the module doc).

    No network call happens here. Raises :class:`ConfigurationError` when a
    required setting is missing (naming every place looked at) and
    :class:`LoginRequiredError` when only a login would help but
    ``interactive`` is false, or in a process started by ``credentials --serve``.
    """
    refuse_login_in_delegated_process()
    flow = (settings.flow or "auto").strip()
    user_kwargs: dict[str, Any] = {"prompt": prompt, "sleep": sleep, "interactive": interactive}

    if flow != "auto":
        if ":" in flow:
            return AuthenticatorCredentials(
                load_authenticator(flow), leeway=settings.leeway, clock=clock
            )
        if flow == "static":
            require(settings, "token")
            assert settings.token is not None
            return StaticToken(settings.token, clock=clock)
        if flow == "command":
            require(settings, "token_command")
            assert settings.token_command is not None
            from sts_bridge.auth.command import CommandToken  # runs a subprocess

            return CommandToken(settings.token_command, leeway=settings.leeway, clock=clock)
        require(settings, "issuer")
        assert settings.issuer is not None
        kwargs = _provider_kwargs(settings, clock)
        if flow == "client-credentials":
            require(settings, "client_secret")
            return ClientCredentials(
                settings.issuer, settings.client_id, settings.client_secret, **kwargs
            )
        if flow == "refresh-token":
            return RefreshTokenCredentials(settings.issuer, settings.client_id, **kwargs)
        if flow == "device":
            from sts_bridge.auth.device import DeviceCodeCredentials

            return DeviceCodeCredentials(
                settings.issuer, settings.client_id, **kwargs, **user_kwargs
            )
        if flow == "browser":
            from sts_bridge.auth.browser import BrowserCredentials

            return BrowserCredentials(
                settings.issuer,
                settings.client_id,
                **kwargs,
                **user_kwargs,
                open_browser=open_browser,
            )
        raise ConfigurationError(f"unknown flow {flow!r}")  # load_settings checked it

    if settings.token:
        return StaticToken(settings.token, clock=clock)
    if settings.token_command:
        from sts_bridge.auth.command import CommandToken

        return CommandToken(settings.token_command, leeway=settings.leeway, clock=clock)
    require(settings, "issuer")
    assert settings.issuer is not None
    kwargs = _provider_kwargs(settings, clock)
    if settings.client_secret:
        return ClientCredentials(
            settings.issuer, settings.client_id, settings.client_secret, **kwargs
        )
    cache: TokenCache | None = kwargs["cache"]
    cached = cache.load() if cache is not None else None
    if cached is not None and cached.refresh_token:
        return RefreshTokenCredentials(settings.issuer, settings.client_id, **kwargs)
    if not interactive:
        where = f"no cached login in {cache.path}" if cache else "the token cache is off"
        raise LoginRequiredError(
            "no credentials: TERRAPI_TOKEN, TERRAPI_TOKEN_COMMAND and TERRAPI_CLIENT_SECRET "
            f"are not set, and {where} (issuer {settings.issuer}, client {settings.client_id})"
        )
    if no_browser:
        from sts_bridge.auth.device import DeviceCodeCredentials

        return DeviceCodeCredentials(settings.issuer, settings.client_id, **kwargs, **user_kwargs)
    from sts_bridge.auth.browser import BrowserCredentials

    return BrowserCredentials(
        settings.issuer, settings.client_id, **kwargs, **user_kwargs, open_browser=open_browser
    )


def logout(settings: Settings) -> tuple[bool, bool]:
    """Forget the cached login of these settings: ``(cache_deleted, revoked)``.

    The refresh token is revoked when the provider has a revocation endpoint;
    an unreachable provider does not stop the local logout. Raises
    :class:`LoginRequiredError` in a process started by ``credentials --serve``.
    """
    refuse_login_in_delegated_process()
    require(settings, "issuer")
    assert settings.issuer is not None
    cache = token_cache_for(settings)
    if cache is None:
        return False, False
    existed = cache.load() is not None or cache.path.exists()
    creds: UserCredentials = RefreshTokenCredentials(
        settings.issuer, settings.client_id, **_provider_kwargs(settings, None)
    )
    revoked = creds.logout()
    return existed, revoked
