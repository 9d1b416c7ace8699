"""``TokenIntrospection``: the claims of an opaque token, from the issuer (RFC 7662).

Some issuers hand out access tokens that are random strings, not JWTs. A
service learns who holds one by POSTing it to the ``introspection_endpoint``
of the issuer's discovery document, authenticated as the service's own
client (``client_secret_basic``), through :class:`~sts_bridge.auth.oauth.OAuthClient`
and so the same HTTP rules as every other call to the identity provider
(the CA rule, ``HTTPS_PROXY`` / ``NO_PROXY``). ``active: false`` (revoked,
expired, unknown, or not this service's to see) refuses the token; the
claims of an active one are then checked like a JWT's by
:class:`~sts_bridge.service.verify.CallerVerifier`.

The answers are cached, and concurrent requests with one token wait for
one another, so that a burst of requests with one token makes one call to
the issuer: at most ``cache_size`` entries, each kept at most
``cache_seconds`` and never past the token's own ``exp``. The cache is keyed
by the SHA-256 of the token, never the token itself; a revoked token is
refused at the latest ``cache_seconds`` after its revocation.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Any

from sts_bridge._redact import remember_secret
from sts_bridge.auth.discovery import discover
from sts_bridge.auth.oauth import OAuthClient
from sts_bridge.clock import Clock, utc_now
from sts_bridge.errors import CallerRefusedError

__all__ = ["DEFAULT_CACHE_SECONDS", "DEFAULT_CACHE_SIZE", "TokenIntrospection"]

logger = logging.getLogger("sts_bridge.service")

#: Longest time an introspection answer is reused (also: how late a revocation is noticed).
DEFAULT_CACHE_SECONDS = 30.0
#: Most answers kept (least recently used dropped first).
DEFAULT_CACHE_SIZE = 4096


class TokenIntrospection:
    """Introspects tokens at one issuer as one confidential client (see the module).

    :param issuer: the issuer URL (its discovery document names the endpoint).
    :param client_id: the service's client id.
    :param client_secret: its secret (introspection needs an authenticated client).
    :param verify: TLS verification: ``True``, ``False`` or a CA bundle path.
    :param cache_seconds: longest reuse of an answer (``0``: no cache).
    :param cache_size: most answers kept.
    :param clock: "now" (tests).
    """

    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        *,
        verify: bool | str = True,
        timeout: float = 10.0,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Clock | None = None,
    ) -> None:
        if not client_secret:
            raise ValueError("introspection needs the service's client secret")
        if cache_seconds < 0 or cache_size < 0:
            raise ValueError("cache_seconds and cache_size must not be negative")
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        remember_secret(client_secret)
        self.verify = verify
        self.timeout = timeout
        self.cache_seconds = float(cache_seconds)
        self.cache_size = int(cache_size)
        self._clock: Clock = clock or utc_now
        self._lock = threading.Lock()
        self._oauth: OAuthClient | None = None
        self._endpoint: str | None = None
        # sha256(token) -> (claims, or None when inactive; reused until this instant)
        self._cache: OrderedDict[str, tuple[dict[str, Any] | None, datetime]] = OrderedDict()
        # sha256(token) -> the lock of the one introspection of it under way
        self._pending: dict[str, threading.Lock] = {}
        self.calls = 0  # introspection requests posted (tests count them)

    def __repr__(self) -> str:
        return (
            f"TokenIntrospection(issuer={self.issuer!r}, client_id={self.client_id!r}, "
            f"cached={len(self._cache)})"
        )

    def close(self) -> None:
        with self._lock:
            if self._oauth is not None:
                self._oauth.close()
                self._oauth = None

    def claims(self, token: str) -> dict[str, Any]:
        """The claims the issuer holds for ``token`` (``active`` removed).

        Raises :class:`~sts_bridge.errors.CallerRefusedError` (401) when the
        issuer says the token is not active or offers no introspection, and
        the :class:`~sts_bridge.errors.AuthError` of the issuer's answer
        (e.g. this client may not introspect) or
        :class:`~sts_bridge.errors.ProviderUnreachableError` otherwise.
        """
        key = hashlib.sha256(token.encode("utf-8")).hexdigest()
        found = self._cached(key)
        if found is not None:
            return _active_or_refuse(found[0])
        with self._lock:
            pending = self._pending.setdefault(key, threading.Lock())
        with pending:
            try:
                found = self._cached(key)  # the request we waited for has just answered
                if found is not None:
                    return _active_or_refuse(found[0])
                claims = self._ask(token)
                self._remember(key, claims, self._clock())
            finally:
                with self._lock:
                    if self._pending.get(key) is pending:
                        del self._pending[key]
        return _active_or_refuse(claims)

    def _cached(self, key: str) -> tuple[dict[str, Any] | None] | None:
        """``(claims or None,)`` of a live cache entry, ``None`` when there is none."""
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[1] > now:
                self._cache.move_to_end(key)
                return (hit[0],)
            self._cache.pop(key, None)
            return None

    def _ask(self, token: str) -> dict[str, Any] | None:
        oauth, endpoint = self._client()
        remember_secret(token)
        with self._lock:
            self.calls += 1
        answer = oauth.post_form(
            endpoint, {"token": token, "token_type_hint": "access_token"}, "introspection"
        )
        return _parsed(answer)

    def _client(self) -> tuple[OAuthClient, str]:
        with self._lock:
            if self._oauth is None or self._endpoint is None:
                metadata = discover(self.issuer, verify=self.verify, timeout=self.timeout)
                if not metadata.introspection_endpoint:
                    raise CallerRefusedError(
                        "the token is not a signed JWT and the issuer offers no introspection"
                    )
                oauth = OAuthClient(
                    metadata,
                    self.client_id,
                    self._client_secret,
                    verify=self.verify,
                    timeout=self.timeout,
                )
                oauth.session  # noqa: B018 -- built once here, then shared by threads
                self._oauth, self._endpoint = oauth, metadata.introspection_endpoint
            return self._oauth, self._endpoint

    def _remember(self, key: str, claims: dict[str, Any] | None, now: datetime) -> None:
        if not self.cache_seconds or not self.cache_size:
            return
        until = now + timedelta(seconds=self.cache_seconds)
        exp = claims.get("exp") if claims is not None else None
        if claims is not None:
            if not isinstance(exp, (int, float)) or isinstance(exp, bool):
                return  # no expiry: nothing bounds the answer's validity, ask again
            until = min(until, datetime.fromtimestamp(float(exp), timezone.utc))
        with self._lock:
            self._cache[key] = (claims, until)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)


def _parsed(answer: dict[str, Any]) -> dict[str, Any] | None:
    """The claims of an active token, ``None`` for an inactive one (RFC 7662 section 2.2)."""
    if answer.get("active") is not True:
        return None
    return {k: v for k, v in answer.items() if k != "active"}


def _active_or_refuse(claims: dict[str, Any] | None) -> dict[str, Any]:
    if claims is None:
        raise CallerRefusedError("the issuer says the token is not active")
    return dict(claims)
