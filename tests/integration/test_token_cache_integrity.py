"""A refresh failure never corrupts the token cache: a provider that is gone
leaves the cached login byte for byte as it was (usable once the provider is
back); a refused refresh token removes the login cleanly (one clear error,
no crash loop)."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest
import requests
from sts_bridge_devstack.idp import IdentityProvider, IdpConfig

from sts_bridge.auth import DeviceAuthorization, DeviceCodeCredentials, TokenCache
from sts_bridge.auth.discovery import clear_discovery_cache
from sts_bridge.errors import InvalidGrantError, LoginRequiredError, ProviderUnreachableError

pytestmark = pytest.mark.integration

TTL = 4


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("TERRAPI_", "STS_BRIDGE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STS_BRIDGE_CONFIG_FILE", str(tmp_path / "no-config"))
    clear_discovery_cache()


def _login(idp: IdentityProvider, cache: TokenCache) -> DeviceCodeCredentials:
    def prompt(auth: DeviceAuthorization) -> None:
        threading.Thread(
            target=idp.approve_device, args=(auth.user_code, "bob", "bob-password"), daemon=True
        ).start()

    creds = DeviceCodeCredentials(
        idp.issuer,
        idp.cli_client_id or "",
        scopes=("gep",),
        audience=idp.audience,
        leeway=0.5,
        prompt=prompt,
        cache=cache,
    )
    creds.login()
    return creds


def _cache(idp: IdentityProvider, tmp_path: Path) -> TokenCache:
    return TokenCache(
        tmp_path / "cache",
        issuer=idp.issuer,
        client_id=idp.cli_client_id or "",
        scopes=("gep",),
        audience=idp.audience,
    )


def test_unreachable_provider_leaves_the_cache_untouched(tmp_path: Path) -> None:
    idp = IdentityProvider(IdpConfig(access_token_ttl=TTL), workdir=tmp_path).start()
    try:
        cache = _cache(idp, tmp_path)
        creds = _login(idp, cache)
        before = cache.path.read_bytes()
    finally:
        idp.stop()  # the provider goes away
    time.sleep(TTL + 0.5)  # the access token is now expired: a refresh is needed
    with pytest.raises(ProviderUnreachableError):
        creds.token()
    assert cache.path.read_bytes() == before
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert json.loads(before)  # still a whole document
    assert not list(cache.path.parent.glob("*.tmp*"))  # no half-written temp files


def test_refused_refresh_token_clears_the_login_cleanly(tmp_path: Path) -> None:
    with IdentityProvider(IdpConfig(access_token_ttl=TTL), workdir=tmp_path) as idp:
        cache = _cache(idp, tmp_path)
        creds = _login(idp, cache)
        refresh_token = json.loads(cache.path.read_text())
        found = [v for k, v in _walk(refresh_token) if k == "refresh_token"]
        assert found, "the cached login holds a refresh token"
        requests.post(
            idp.revocation_endpoint,
            data={"token": found[0], "client_id": idp.cli_client_id},
            timeout=10,
        ).raise_for_status()
        time.sleep(TTL + 0.5)
        with pytest.raises(InvalidGrantError) as excinfo:
            creds.token()
        assert "sts-bridge login" in str(excinfo.value)
        assert not cache.path.exists()  # removed, not half-written
        # a new process finds no login: one clear error, not a retry loop
        fresh = DeviceCodeCredentials(
            idp.issuer,
            idp.cli_client_id or "",
            scopes=("gep",),
            audience=idp.audience,
            cache=_cache(idp, tmp_path),
            interactive=False,
        )
        with pytest.raises(LoginRequiredError):
            fresh.token()


def _walk(doc: object, key: str = "") -> list[tuple[str, object]]:
    if isinstance(doc, dict):
        out: list[tuple[str, object]] = []
        for k, v in doc.items():
            out.extend(_walk(v, k))
        return out
    return [(key, doc)]
