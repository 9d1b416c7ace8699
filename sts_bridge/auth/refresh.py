"""Refresh-token based credentials: a person's login, kept alive by refreshing.

The provider may rotate the refresh token on every use (ours does). The new
refresh token is stored (memory and cache file, under both locks) before the
access token is handed out, and the old one is never sent again; replaying a
rotated-out refresh token makes the provider revoke the whole grant.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sts_bridge.auth.base import Token
from sts_bridge.auth.provider import ProviderCredentials
from sts_bridge.errors import AuthError, InvalidGrantError, LoginRequiredError

__all__ = ["USER_SCOPES", "RefreshTokenCredentials", "UserCredentials"]

logger = logging.getLogger("sts_bridge.auth")

#: Scopes every person's login asks for: an ID token and a refresh token.
USER_SCOPES = ("openid", "offline_access")


class UserCredentials(ProviderCredentials):
    """Base of the person flows: refresh while possible, else :meth:`_login`.

    Subclasses implement :meth:`_login` (device code, browser). Without an
    interactive login, a missing login raises
    :class:`~sts_bridge.errors.LoginRequiredError` and a refused refresh
    token :class:`~sts_bridge.errors.InvalidGrantError` (the cache is then
    cleared so that the next run does not try the dead token again).
    """

    def __init__(self, *args: Any, refresh_token: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if refresh_token:
            # A refresh token handed in by code: start from it (access token unknown).
            self._token = Token(access_token="-", refresh_token=refresh_token)  # noqa: S106
            self.invalidate()

    @property
    def login_scopes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*USER_SCOPES, *self.scopes)))

    def _login(self) -> Token:
        raise LoginRequiredError(
            f"not logged in to {self.issuer} (no cached login for client {self.client_id})"
        )

    def _fetch(self, current: Token | None) -> Token:
        if current is not None and current.refresh_token:
            try:
                return self.oauth.refresh(current, now=self.now())
            except InvalidGrantError:
                self._forget()
                raise
        return self._login()

    def _forget(self) -> None:
        self._token = None
        if self.cache is not None:
            self.cache.delete()

    def login(self) -> Token:
        """Run the login flow now (even when a login is cached) and store the result.

        Raises :class:`~sts_bridge.errors.AccessDeniedError`,
        :class:`~sts_bridge.errors.LoginTimeoutError`, ... from the flow.
        """
        with self._lock:
            token = self._login()
            self.refresh_count += 1
            self._check_arrival(token)
            if self.cache is not None:
                with self.cache.locked(self.lock_timeout):
                    self.cache.save(token)
            return self._store(token)

    def load_cached(self) -> bool:
        """Adopt the cached login, if any; ``True`` when there is one."""
        if self.cache is None:
            return self._token is not None
        with self._lock:
            cached = self.cache.load()
            if cached is not None:
                self._store(cached)
            return cached is not None

    def logout(self) -> bool:
        """Forget the login: revoke the refresh token (when possible) and delete the cache.

        Returns ``True`` when the provider revoked a token. A provider that
        cannot be reached does not stop the local logout (a warning is logged).
        """
        with self._lock:
            token = self._token
            if self.cache is not None:
                with self.cache.locked(self.lock_timeout):
                    cached = self.cache.load()
                    token = cached or token
                    self.cache.delete()
            self._token = None
        if token is None or not token.refresh_token:
            return False
        try:
            return self.oauth.revoke(token.refresh_token, "refresh_token")
        except AuthError as exc:
            logger.warning("the refresh token could not be revoked: %s", exc.message)
            return False


class RefreshTokenCredentials(UserCredentials):
    """A cached login (or a refresh token given by code), refreshed as needed.

    Never interactive: without a login, :meth:`token` raises
    :class:`~sts_bridge.errors.LoginRequiredError`.
    """

    def __init__(
        self,
        issuer: Any,
        client_id: str,
        client_secret: str | None = None,
        *,
        scopes: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(issuer, client_id, client_secret, scopes=scopes, **kwargs)
