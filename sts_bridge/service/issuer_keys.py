"""``IssuerKeys``: an issuer's signing keys, fetched once and refreshed on an unknown ``kid``.

The keys come from the ``jwks_uri`` of the issuer's discovery document,
fetched with ``requests`` like every other call to the identity provider:
the CA rule (``verify``: ``True``, ``False`` or a CA bundle path) and
``HTTPS_PROXY`` / ``NO_PROXY`` (``requests`` reads them) hold here too.

A token naming a key we do not hold triggers one new fetch (the issuer
rotated its keys), but at most one per ``min_refresh_interval`` seconds:
otherwise anyone could make the service hammer the issuer by sending
tokens with made-up ``kid`` values. One lock: many threads meeting an
unknown ``kid`` at once cause one fetch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sts_bridge.auth.discovery import discover, unreachable
from sts_bridge.config import trusted_cas
from sts_bridge.errors import ConfigurationError

if TYPE_CHECKING:
    import requests
    from joserfc.jwk import Key

__all__ = ["DEFAULT_MIN_REFRESH_INTERVAL", "IssuerKeys"]

logger = logging.getLogger("sts_bridge.service")

#: Seconds between two JWKS fetches caused by unknown ``kid`` values.
DEFAULT_MIN_REFRESH_INTERVAL = 60.0


class IssuerKeys:
    """The public keys of one issuer, by ``kid``.

    :param issuer: the issuer URL (its discovery document names ``jwks_uri``).
    :param verify: TLS verification: ``True``, ``False`` or a CA bundle path.
    :param min_refresh_interval: seconds between fetches caused by unknown keys.
    :param timeout: seconds per HTTP request.
    :param session: a ``requests.Session`` (tests, custom transport).
    :param monotonic: the clock of the rate limit (tests).
    """

    def __init__(
        self,
        issuer: str,
        *,
        verify: bool | str = True,
        min_refresh_interval: float = DEFAULT_MIN_REFRESH_INTERVAL,
        timeout: float = 10.0,
        session: requests.Session | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.verify = verify
        self.min_refresh_interval = min_refresh_interval
        self.timeout = timeout
        self._session = session
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._keys: dict[str, Key] = {}
        self._last_fetch: float | None = None
        self.fetches = 0  # JWKS documents fetched (tests count them)

    def __repr__(self) -> str:
        return f"IssuerKeys(issuer={self.issuer!r}, keys={len(self._keys)})"

    def key(self, kid: str | None) -> Key | None:
        """The key named ``kid`` (``None``: the issuer's only key), fetching when needed.

        ``None`` when the issuer does not hold such a key, even after a new
        fetch (or when a fetch is not allowed yet). Raises
        :class:`~sts_bridge.errors.ProviderUnreachableError` when the first
        fetch fails.
        """
        found = self._lookup(kid)
        if found is not None:
            return found
        with self._lock:
            found = self._lookup(kid)  # another thread may have just fetched
            if found is not None:
                return found
            now = self._monotonic()
            if self._last_fetch is not None and now - self._last_fetch < self.min_refresh_interval:
                logger.debug("unknown signing key: the issuer's keys were fetched moments ago")
                return None
            self._last_fetch = now
            self._keys = self._fetch()
            return self._lookup(kid)

    def _lookup(self, kid: str | None) -> Key | None:
        keys = self._keys
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    def _fetch(self) -> dict[str, Key]:
        import requests
        from joserfc.jwk import KeySet

        metadata = discover(self.issuer, verify=self.verify, timeout=self.timeout)
        url = metadata.jwks_uri
        if not url:
            raise ConfigurationError(
                f"the identity provider {self.issuer} publishes no jwks_uri",
                hint="a service can only check JWT access tokens of an issuer with a JWKS",
            )
        http = self._session or requests.Session()
        try:
            response = http.get(url, timeout=self.timeout, verify=trusted_cas(self.verify))
            response.raise_for_status()
            document: Any = response.json()
        except requests.RequestException as exc:
            raise unreachable("signing keys", url, exc) from exc
        except ValueError as exc:
            raise ConfigurationError(f"the JWKS at {url} is not JSON") from exc
        finally:
            if self._session is None:
                http.close()
        keys: dict[str, Key] = {}
        for raw in document.get("keys", []) if isinstance(document, dict) else []:
            if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
                continue
            try:
                key = KeySet.import_key_set({"keys": [raw]}).keys[0]
            except Exception as exc:  # a key we cannot use is skipped, not fatal
                logger.debug("skipping a signing key of %s: %s", self.issuer, type(exc).__name__)
                continue
            keys[str(raw.get("kid") or key.thumbprint())] = key
        self.fetches += 1
        logger.debug("fetched %d signing key(s) of %s", len(keys), self.issuer)
        return keys
