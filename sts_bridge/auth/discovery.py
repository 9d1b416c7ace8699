"""OpenID Provider discovery (``/.well-known/openid-configuration``).

``requests`` is imported when a document is fetched, not at import time: a
warm CLI run that finds its token in the cache never needs it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sts_bridge.config import trusted_cas
from sts_bridge.errors import ConfigurationError, ProviderUnreachableError

if TYPE_CHECKING:
    import requests

__all__ = ["ProviderMetadata", "clear_discovery_cache", "discover", "unreachable"]

_cache: dict[tuple[str, str], ProviderMetadata] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class ProviderMetadata:
    """The endpoints of an OpenID provider (only ``issuer`` and ``token_endpoint`` required)."""

    issuer: str
    token_endpoint: str
    authorization_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = None
    jwks_uri: str | None = None
    userinfo_endpoint: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> ProviderMetadata:
        def text(name: str) -> str | None:
            value = document.get(name)
            return value if isinstance(value, str) and value else None

        issuer, token_endpoint = text("issuer"), text("token_endpoint")
        if issuer is None or token_endpoint is None:
            raise ValueError("the discovery document lacks issuer or token_endpoint")
        return cls(
            issuer=issuer,
            token_endpoint=token_endpoint,
            authorization_endpoint=text("authorization_endpoint"),
            device_authorization_endpoint=text("device_authorization_endpoint"),
            revocation_endpoint=text("revocation_endpoint"),
            introspection_endpoint=text("introspection_endpoint"),
            jwks_uri=text("jwks_uri"),
            userinfo_endpoint=text("userinfo_endpoint"),
            raw=dict(document),
        )


def unreachable(what: str, url: str, exc: BaseException) -> ProviderUnreachableError:
    """A :class:`ProviderUnreachableError` for a failed HTTP call (no secrets in it)."""
    import requests

    host = urlsplit(url).netloc or url
    if isinstance(exc, requests.exceptions.SSLError):
        return ProviderUnreachableError(
            f"TLS verification failed for the identity provider at {host} ({what})",
            hint="set TERRAPI_CA_BUNDLE to the CA bundle of your provider",
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return ProviderUnreachableError(f"the identity provider at {host} timed out ({what})")
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        return ProviderUnreachableError(
            f"the identity provider at {host} answered HTTP {exc.response.status_code} ({what})"
        )
    return ProviderUnreachableError(
        f"cannot reach the identity provider at {host} ({what}: {type(exc).__name__})"
    )


def clear_discovery_cache() -> None:
    with _cache_lock:
        _cache.clear()


def discover(
    issuer: str,
    *,
    verify: bool | str = True,
    timeout: float = 10.0,
    session: requests.Session | None = None,
    use_cache: bool = True,
) -> ProviderMetadata:
    """Fetch and check the provider's discovery document (memoised per process).

    Raises :class:`ProviderUnreachableError` when it cannot be fetched and
    :class:`ConfigurationError` when it is not a discovery document for ``issuer``.
    """
    issuer = issuer.rstrip("/")
    key = (issuer, str(verify))
    if use_cache:
        with _cache_lock:
            if key in _cache:
                return _cache[key]
    import requests

    url = f"{issuer}/.well-known/openid-configuration"
    http = session or requests.Session()
    try:
        response = http.get(url, timeout=timeout, verify=trusted_cas(verify))
        if response.status_code >= 500:
            response.raise_for_status()
        if response.status_code != 200:
            raise ConfigurationError(
                f"no OpenID discovery document at {url} (HTTP {response.status_code})",
                hint="check TERRAPI_ISSUER: the issuer URL, without the .well-known part",
            )
        document = response.json()
    except requests.RequestException as exc:
        raise unreachable("discovery", url, exc) from exc
    except ValueError as exc:
        raise ConfigurationError(
            f"the answer at {url} is not JSON", hint="check TERRAPI_ISSUER"
        ) from exc
    finally:
        if session is None:
            http.close()
    try:
        metadata = ProviderMetadata.from_document(document if isinstance(document, dict) else {})
    except ValueError as exc:
        raise ConfigurationError(f"{url}: {exc}", hint="check TERRAPI_ISSUER") from exc
    if metadata.issuer.rstrip("/") != issuer:
        raise ConfigurationError(
            f"the provider at {url} calls itself {metadata.issuer!r}, not {issuer!r}",
            hint="set TERRAPI_ISSUER to exactly the issuer the provider announces",
        )
    if use_cache:
        with _cache_lock:
            _cache[key] = metadata
    return metadata
