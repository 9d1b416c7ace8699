"""``TokenCredentials``: an access token with state, refreshed once under locks.

Modelled on google-auth's ``Credentials``: a token has a timezone-aware
expiry and a :class:`~sts_bridge.clock.CredentialState` (``FRESH``, or
``INVALID``: missing, or inside the leeway, so it must be refreshed before
use; tokens have no advisory window, so never ``STALE``); callers ask
:meth:`TokenCredentials.token` for a valid value and never look at the
expiry themselves.

Refresh happens at most once for many threads (a ``threading.RLock``) and,
when a :class:`~sts_bridge.auth.cache.TokenCache` is attached, at most once
for many processes sharing that cache (a file lock). Both locks are followed
by a re-check: whoever waited finds the token another thread or process has
just obtained and uses it. With refresh-token rotation this is not an
optimisation but a must: a rotated-out refresh token is single-use, and the
provider revokes the whole grant when it is replayed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from sts_bridge._redact import remember_secret
from sts_bridge.clock import Clock, CredentialState, credential_state, utc_now
from sts_bridge.errors import ClockSkewError

__all__ = [
    "DEFAULT_LEEWAY",
    "Token",
    "TokenCredentials",
    "TokenStore",
    "unverified_claims",
]

logger = logging.getLogger("sts_bridge.auth")

#: Seconds before expiry at which a token counts as expired (production tokens live 1 h).
DEFAULT_LEEWAY = 60.0
#: Smallest clock disagreement treated as skew (``iat`` has one-second resolution).
_MIN_SKEW_TOLERANCE = 2.0


def unverified_claims(token: str | None) -> dict[str, Any]:
    """The payload of a JWT **without verifying it** (``{}`` when not a JWT).

    Only for display and expiry hints; never for authorisation decisions.
    """
    if not token or token.count(".") != 2:
        return {}
    payload = token.split(".")[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _from_timestamp(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), timezone.utc)
    return None


@dataclass(frozen=True)
class Token:
    """One issued token set (a frozen snapshot). ``repr`` never shows a token.

    ``expiry`` is tz-aware UTC (``None``: unknown, used until refused);
    ``obtained_at`` is the local time it arrived, used to shrink the leeway
    for very short-lived tokens.
    """

    access_token: str = field(repr=False)
    expiry: datetime | None = None
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    scope: str | None = None
    token_type: str = "Bearer"  # noqa: S105 (a token type, not a secret)
    obtained_at: datetime | None = None

    def __post_init__(self) -> None:
        remember_secret(self.access_token, self.refresh_token, self.id_token)

    def __repr__(self) -> str:
        return (
            f"Token(expiry={self.expiry!r}, scope={self.scope!r}, "
            f"refresh_token={'yes' if self.refresh_token else 'no'}, "
            f"id_token={'yes' if self.id_token else 'no'})"
        )

    @classmethod
    def from_response(cls, response: Mapping[str, Any], *, now: datetime) -> Token:
        """Build from a token endpoint answer; expiry from ``expires_in`` (local clock).

        ``expires_in`` is relative, so it is immune to a skewed local clock;
        the JWT ``exp`` is only used when ``expires_in`` is missing.
        """
        access = response.get("access_token")
        if not isinstance(access, str) or not access:
            raise ValueError("the token response has no access_token")
        expiry: datetime | None = None
        expires_in = response.get("expires_in")
        try:
            if expires_in is not None:
                expiry = now + timedelta(seconds=float(expires_in))
        except (TypeError, ValueError):
            expiry = None
        if expiry is None:
            expiry = _from_timestamp(unverified_claims(access).get("exp"))
        if expiry is None and response.get("expires_at") is not None:
            expiry = _from_timestamp(response.get("expires_at"))
        refresh = response.get("refresh_token")
        id_token = response.get("id_token")
        scope = response.get("scope")
        return cls(
            access_token=access,
            expiry=expiry,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            id_token=id_token if isinstance(id_token, str) and id_token else None,
            scope=scope if isinstance(scope, str) else None,
            token_type=str(response.get("token_type") or "Bearer"),
            obtained_at=now,
        )

    def usable_until(self, leeway: float) -> datetime | None:
        """When this token stops being handed out (expiry minus the leeway).

        The leeway is capped at half the token's lifetime: authlib's fixed
        60 s leeway makes a 5-second token look expired on arrival, which
        would turn every call into a refresh.
        """
        if self.expiry is None:
            return None
        return self.expiry - timedelta(seconds=self.margin(leeway))

    def margin(self, leeway: float) -> float:
        """``leeway`` capped at half the token's lifetime when that is known."""
        if self.expiry is None or self.obtained_at is None:
            return leeway
        lifetime = (self.expiry - self.obtained_at).total_seconds()
        return min(leeway, max(lifetime, 0.0) / 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "id_token": self.id_token,
            "scope": self.scope,
            "token_type": self.token_type,
            "expiry": self.expiry.timestamp() if self.expiry else None,
            "obtained_at": self.obtained_at.timestamp() if self.obtained_at else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Token:
        access = data.get("access_token")
        if not isinstance(access, str) or not access:
            raise ValueError("no access_token")
        for name in ("refresh_token", "id_token", "scope"):
            if data.get(name) is not None and not isinstance(data.get(name), str):
                raise ValueError(f"{name} is not a string")
        return cls(
            access_token=access,
            expiry=_from_timestamp(data.get("expiry")),
            refresh_token=data.get("refresh_token") or None,
            id_token=data.get("id_token") or None,
            scope=data.get("scope"),
            token_type=str(data.get("token_type") or "Bearer"),
            obtained_at=_from_timestamp(data.get("obtained_at")),
        )


class TokenStore(Protocol):
    """A cross-process store of one principal's token (see :mod:`sts_bridge.auth.cache`)."""

    #: Where the token is kept (shown to the user after a login).
    path: Path

    def locked(self, timeout: float = ...) -> contextlib.AbstractContextManager[None]:
        """Hold the store's cross-process lock (raises TokenCacheError on timeout)."""
        ...

    def load(self) -> Token | None:
        """The stored token, or ``None`` when there is none or it is unreadable."""
        ...

    def save(self, token: Token) -> None:
        """Store ``token`` atomically."""
        ...

    def delete(self) -> bool:
        """Forget the stored token; ``True`` when there was one."""
        ...


class TokenCredentials:
    """Base class: a source of valid access tokens.

    Subclasses implement :meth:`_fetch` (called with every lock held) and
    return a new :class:`Token`. Users call :meth:`token`.

    :param leeway: seconds before expiry at which a token is refreshed
        (default 60; capped at half the token lifetime; tests use ~1).
    :param clock: returns "now" as a tz-aware datetime (injectable for tests).
    :param cache: a :class:`~sts_bridge.auth.cache.TokenCache` shared with
        other processes, or ``None`` for in-memory only.
    :param lock_timeout: seconds to wait for another process's refresh.
    """

    def __init__(
        self,
        *,
        leeway: float = DEFAULT_LEEWAY,
        clock: Clock | None = None,
        cache: TokenStore | None = None,
        lock_timeout: float = 120.0,
    ) -> None:
        if leeway < 0:
            raise ValueError("leeway must not be negative")
        self.leeway = float(leeway)
        self._clock: Clock = clock or utc_now
        self.cache = cache
        self.lock_timeout = lock_timeout
        self._lock = threading.RLock()
        self._token: Token | None = None
        # The access token the API last refused (invalidate()): never adopted
        # again from the shared cache, where it still looks valid by the clock.
        self._refused_token: str | None = None
        self.refresh_count = 0  # tokens obtained from the provider by this object

    # -- what subclasses provide -----------------------------------------

    def _fetch(self, current: Token | None) -> Token:
        """Obtain a new token (``current`` is the newest known one, maybe stale)."""
        raise NotImplementedError

    # -- state ------------------------------------------------------------

    def now(self) -> datetime:
        return self._clock()

    def state_of(self, token: Token | None) -> CredentialState:
        """``FRESH`` (usable) or ``INVALID`` (missing or inside the leeway: refresh first)."""
        if token is None:
            return CredentialState.INVALID
        margin = token.margin(self.leeway)
        return credential_state(token.expiry, self.now(), advisory=margin, mandatory=margin)

    @property
    def state(self) -> CredentialState:
        """The :class:`CredentialState` of the current token (``INVALID`` when there is none)."""
        return self.state_of(self._token)

    @property
    def expiry(self) -> datetime | None:
        """Expiry (tz-aware UTC) of the current token, ``None`` if unknown or none yet."""
        token = self._token
        return token.expiry if token else None

    @property
    def claims(self) -> dict[str, Any]:
        """Unverified payload of the current access token when it is a JWT, else ``{}``."""
        token = self._token
        return unverified_claims(token.access_token) if token else {}

    @property
    def id_token_claims(self) -> dict[str, Any]:
        """Unverified payload of the ID token of the last login, ``{}`` if none."""
        token = self._token
        return unverified_claims(token.id_token) if token else {}

    @property
    def subject(self) -> str | None:
        """``sub`` of the access token (or of the ID token), ``None`` when unknown."""
        for claims in (self.claims, self.id_token_claims):
            sub = claims.get("sub")
            if isinstance(sub, str):
                return sub
        return None

    # -- the public operations ------------------------------------------

    def token(self) -> str:
        """A valid access token, obtained or refreshed when needed.

        Raises a subclass of :class:`~sts_bridge.errors.AuthError` when no
        token can be obtained (see the subclass for which).
        """
        return self.valid_token().access_token

    def valid_token(self) -> Token:
        """The whole valid :class:`Token` snapshot (access, expiry, ...)."""
        token = self._token
        if self.state_of(token) is CredentialState.FRESH:
            assert token is not None
            return token
        with self._lock:
            return self._renew(force=False)

    def refresh(self, *, adopt: bool = True) -> None:
        """Obtain a new token now, even if the current one looks valid.

        Use it after the API refused a token (401). If another process has
        already replaced the token in the shared cache, that one is adopted
        instead of asking the provider again, unless ``adopt`` is false
        (``sts-bridge login``: a login asks the provider, never a cache the
        API may refuse). Raises like :meth:`token`.
        """
        with self._lock:
            self._renew(force=True, adopt=adopt)

    def invalidate(self) -> None:
        """Distrust the current access token (the API refused it): the next
        :meth:`token` gets a new one, and never takes the refused one back
        from the shared cache, where it still looks valid by the clock."""
        with self._lock:
            token = self._token
            if token is not None:
                self._refused_token = token.access_token
                # Keep the refresh token: only the access token is distrusted.
                self._token = Token(
                    access_token=token.access_token,
                    expiry=datetime.fromtimestamp(0, timezone.utc),
                    refresh_token=token.refresh_token,
                    id_token=token.id_token,
                    scope=token.scope,
                    token_type=token.token_type,
                    obtained_at=token.obtained_at,
                )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(state={self.state!r}, expiry={self.expiry!r})"

    # -- internals --------------------------------------------------------

    def _renew(self, *, force: bool, adopt: bool = True) -> Token:
        """Called with ``self._lock`` held: re-check, then fetch under the file lock."""
        mine = self._token
        if not force and self.state_of(mine) is CredentialState.FRESH:
            assert mine is not None
            return mine
        replaced = mine.access_token if (force and mine is not None) else self._refused_token
        cache = self.cache
        if cache is None:
            return self._store(self._obtain(mine))
        with cache.locked(self.lock_timeout):
            cached = cache.load()
            if (
                adopt
                and cached is not None
                and self.state_of(cached) is CredentialState.FRESH
                and cached.access_token != replaced
                and cached.access_token != self._refused_token
            ):
                logger.debug("using the token another process has just stored in the cache")
                return self._store(cached)
            base = cached if cached is not None else mine
            new = self._obtain(base)
            # Saved before anyone uses it: with rotation the old refresh token is now dead.
            cache.save(new)
            return self._store(new)

    def _store(self, token: Token) -> Token:
        self._token = token
        return token

    def _obtain(self, current: Token | None) -> Token:
        new = self._fetch(current)
        self.refresh_count += 1
        self._check_arrival(new)
        claims = unverified_claims(new.access_token)
        logger.debug(
            "%s obtained an access token (subject %s, expires %s)",
            type(self).__name__,
            claims.get("sub", "unknown"),
            new.expiry.isoformat() if new.expiry else "unknown",
        )
        return new

    def _check_arrival(self, token: Token) -> None:
        """Raise :class:`ClockSkewError` when a new token cannot be valid by our clock."""
        claims = unverified_claims(token.access_token)
        if not claims:
            return
        now = self.now()
        tolerance = timedelta(seconds=max(self.leeway, _MIN_SKEW_TOLERANCE))
        iat = _from_timestamp(claims.get("iat"))
        exp = _from_timestamp(claims.get("exp"))
        if iat is not None and iat - now > tolerance:
            raise ClockSkewError(
                "the identity provider issued a token "
                f"{(iat - now).total_seconds():.0f} s in the future by this machine's clock"
            )
        if exp is not None and exp <= now:
            raise ClockSkewError(
                "the identity provider issued a token that had already expired by this "
                f"machine's clock ({(now - exp).total_seconds():.0f} s ago)"
            )
