"""Every auth flow end to end against the local IdP (panva oidc-provider, 5-second tokens)."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sts_bridge_devstack.idp import IdentityProvider, IdpConfig

from sts_bridge.auth import (
    BrowserCredentials,
    ClientCredentials,
    DeviceAuthorization,
    DeviceCodeCredentials,
    RefreshTokenCredentials,
    TokenCache,
    credentials_from_settings,
    logout,
)
from sts_bridge.auth.discovery import clear_discovery_cache
from sts_bridge.cli import main
from sts_bridge.config import load_settings
from sts_bridge.errors import (
    AccessDeniedError,
    InvalidClientError,
    InvalidGrantError,
    LoginRequiredError,
    ProviderUnreachableError,
)

pytestmark = pytest.mark.integration

TTL = 5
LEEWAY = 1.0


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityProvider]:
    config = IdpConfig(access_token_ttl=TTL)
    with IdentityProvider(config, workdir=tmp_path_factory.mktemp("idp")) as provider:
        yield provider


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("TERRAPI_", "STS_BRIDGE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STS_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STS_BRIDGE_CONFIG_FILE", str(tmp_path / "no-config"))
    clear_discovery_cache()


def approve_with(
    idp: IdentityProvider, username: str, *, deny: bool = False
) -> Callable[[DeviceAuthorization], None]:
    """A device-flow prompt that approves (or denies) the code like a person would."""
    users = {"alice": "alice-password", "bob": "bob-password"}

    def prompt(auth: DeviceAuthorization) -> None:
        assert auth.verification_uri.startswith(idp.issuer)
        assert auth.verification_uri_complete and auth.user_code
        threading.Thread(
            target=idp.approve_device,
            args=(auth.user_code, username, users[username]),
            kwargs={"deny": deny},
            daemon=True,
        ).start()

    return prompt


def browser_as(idp: IdentityProvider, username: str) -> Callable[[str], bool]:
    users = {"alice": "alice-password", "bob": "bob-password"}

    def open_browser(url: str) -> bool:
        threading.Thread(
            target=idp.complete_browser_login,
            args=(url, username, users[username]),
            kwargs={"follow_callback": True},
            daemon=True,
        ).start()
        return True

    return open_browser


def user_cache(idp: IdentityProvider, tmp_path: Path) -> TokenCache:
    return TokenCache(
        tmp_path / "cache",
        issuer=idp.issuer,
        client_id=idp.cli_client_id or "",
        scopes=("gep",),
        audience=idp.audience,
    )


def device_login(
    idp: IdentityProvider, tmp_path: Path, username: str = "alice", **kwargs: Any
) -> DeviceCodeCredentials:
    creds = DeviceCodeCredentials(
        idp.issuer,
        idp.cli_client_id or "",
        scopes=("gep",),
        audience=idp.audience,
        leeway=LEEWAY,
        prompt=approve_with(idp, username),
        cache=kwargs.pop("cache", user_cache(idp, tmp_path)),
        **kwargs,
    )
    creds.login()
    return creds


def token_posts(idp: IdentityProvider) -> int:
    return int(idp.stats()["by_path"].get("POST /token", 0))


# --------------------------------------------------------------- client credentials


def test_client_credentials_token_cached_and_refreshed(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    cache = TokenCache(tmp_path / "cache", issuer=idp.issuer, client_id=idp.service_client_id or "")
    creds = ClientCredentials(
        idp.issuer,
        idp.service_client_id or "",
        idp.service_client_secret,
        scopes=("gep",),
        audience=idp.audience,
        leeway=LEEWAY,
        cache=cache,
    )
    first = creds.token()
    assert creds.claims["aud"] == idp.audience
    assert creds.subject == idp.service_client_id
    assert creds.expiry is not None and creds.expiry.tzinfo is not None
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    # Another "process" (object) sharing the cache uses the cached token: no request.
    idp.reset_stats()
    other = ClientCredentials(
        idp.issuer, idp.service_client_id or "", idp.service_client_secret, cache=cache
    )
    assert other.token() == first
    assert token_posts(idp) == 0
    time.sleep(TTL - LEEWAY + 0.2)
    second = creds.token()
    assert second != first
    assert token_posts(idp) == 1


def test_wrong_client_secret_is_invalid_client(idp: IdentityProvider) -> None:
    creds = ClientCredentials(idp.issuer, idp.service_client_id or "", "not-the-secret")
    with pytest.raises(InvalidClientError) as info:
        creds.token()
    assert "TERRAPI_CLIENT_SECRET" in str(info.value)
    assert "not-the-secret" not in str(info.value)


def test_unreachable_provider() -> None:
    creds = ClientCredentials("http://127.0.0.1:9", "x", "y")
    with pytest.raises(ProviderUnreachableError) as info:
        creds.token()
    assert "127.0.0.1:9" in str(info.value)


# --------------------------------------------------------------- device code + refresh


def test_device_login_then_five_second_tokens_refresh(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    creds = device_login(idp, tmp_path)
    assert creds.claims["preferred_username"] == "alice"
    assert "gep" in creds.claims["scope"].split()
    first = creds.token()
    assert creds.cache is not None
    assert stat.S_IMODE(creds.cache.path.stat().st_mode) == 0o600
    time.sleep(TTL - LEEWAY + 0.2)
    second = creds.token()
    assert second != first
    assert creds.subject == idp.users["alice"].sub
    # The cached login is picked up by a non-interactive, fresh object (a later run).
    later = credentials_from_settings(
        load_settings(issuer=idp.issuer, scopes="gep", audience=idp.audience, leeway=LEEWAY),
        interactive=False,
    )
    assert isinstance(later, RefreshTokenCredentials)
    assert later.token() == second


def test_refresh_token_rotation_is_honoured(idp: IdentityProvider, tmp_path: Path) -> None:
    creds = device_login(idp, tmp_path)
    assert creds.cache is not None
    before = creds.cache.load()
    assert before is not None and before.refresh_token
    creds.refresh()
    after = creds.cache.load()
    assert after is not None and after.refresh_token
    assert after.refresh_token != before.refresh_token  # rotated and saved
    assert creds.valid_token().refresh_token == after.refresh_token
    creds.refresh()  # keeps working with the rotated one
    # The rotated-out token is dead (and replaying it kills the grant: done last).
    stale = RefreshTokenCredentials(
        idp.issuer, idp.cli_client_id or "", refresh_token=before.refresh_token, leeway=LEEWAY
    )
    with pytest.raises(InvalidGrantError):
        stale.token()


def test_revoked_refresh_token_is_invalid_grant(idp: IdentityProvider, tmp_path: Path) -> None:
    creds = device_login(idp, tmp_path)
    settings = load_settings(issuer=idp.issuer, scopes="gep", audience=idp.audience)
    existed, revoked = logout(settings)
    assert existed and revoked
    assert creds.cache is not None and not creds.cache.path.exists()
    with pytest.raises(InvalidGrantError) as info:
        creds.refresh()
    assert "sts-bridge login" in str(info.value)
    with pytest.raises(LoginRequiredError):
        credentials_from_settings(settings, interactive=False)


def test_device_denied_is_access_denied(idp: IdentityProvider) -> None:
    creds = DeviceCodeCredentials(
        idp.issuer, idp.cli_client_id or "", prompt=approve_with(idp, "bob", deny=True)
    )
    with pytest.raises(AccessDeniedError):
        creds.login()


# --------------------------------------------------------------- browser


def test_browser_login_pkce_state_nonce_id_token(idp: IdentityProvider, tmp_path: Path) -> None:
    creds = BrowserCredentials(
        idp.issuer,
        idp.cli_client_id or "",
        scopes=("gep",),
        audience=idp.audience,
        leeway=LEEWAY,
        open_browser=browser_as(idp, "bob"),
        login_timeout=30,
        cache=user_cache(idp, tmp_path),
    )
    creds.login()
    assert creds.claims["preferred_username"] == "bob"
    assert creds.id_token_claims["aud"] == idp.cli_client_id
    assert creds.valid_token().refresh_token
    before = creds.valid_token().access_token
    time.sleep(TTL - LEEWAY + 0.2)
    assert (creds.token() != before) is True  # refreshed (no token in the failure text)


def test_browser_falls_back_to_device_without_browser(idp: IdentityProvider) -> None:
    creds = BrowserCredentials(
        idp.issuer,
        idp.cli_client_id or "",
        open_browser=lambda url: False,
        prompt=approve_with(idp, "alice"),
    )
    creds.login()
    assert creds.claims["preferred_username"] == "alice"


# --------------------------------------------------------------- the race


_WORKER = textwrap.dedent(
    """
    import hashlib, sys, threading, time
    from sts_bridge.auth import RefreshTokenCredentials, TokenCache
    issuer, client_id, cache_dir, audience, at, n = sys.argv[1:7]
    cache = TokenCache(cache_dir, issuer=issuer, client_id=client_id, scopes=("gep",),
                       audience=audience)
    creds = RefreshTokenCredentials(issuer, client_id, scopes=("gep",), audience=audience,
                                    leeway=1.0, cache=cache)
    creds.token()  # the current, still valid token
    print("ready", flush=True)
    barrier = threading.Barrier(int(n))
    out = []
    def ask():
        barrier.wait()
        out.append(hashlib.sha256(creds.token().encode()).hexdigest())
    threads = [threading.Thread(target=ask) for _ in range(int(n))]
    sys.stdin.readline()  # "go": sent once the token has gone stale
    for t in threads: t.start()
    for t in threads: t.join()
    print("\\n".join(out), flush=True)
    """
)


def test_many_threads_and_processes_cause_one_refresh(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    cache = user_cache(idp, tmp_path)
    creds = device_login(idp, tmp_path, cache=cache)
    stored = cache.load()
    assert stored is not None and stored.expiry is not None
    until = stored.usable_until(LEEWAY)
    assert until is not None
    at = until.timestamp() + 0.05  # the moment the token stops being handed out
    idp.reset_stats()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WORKER,
                idp.issuer,
                idp.cli_client_id or "",
                str(tmp_path / "cache"),
                idp.audience,
                repr(at),
                "4",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        barrier = threading.Barrier(32)
        seen: list[str] = []

        def ask() -> None:
            barrier.wait()
            seen.append(hashlib.sha256(creds.token().encode()).hexdigest())

        threads = [threading.Thread(target=ask) for _ in range(32)]
        time.sleep(max(0.0, at - time.time()))
        # A worker that started after the token went stale refreshed (or read the
        # refreshed token) before "ready": still one refresh in all, under the file lock.
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            seen.extend(line for line in out.split() if line)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert len(seen) == 32 + 16
    assert len(set(seen)) == 1, "everybody got the same, new token"
    assert token_posts(idp) == 1, idp.stats()


# --------------------------------------------------------------- CLI and no leaks


def test_cli_login_token_whoami_logout(
    idp: IdentityProvider,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TERRAPI_ISSUER", idp.issuer)
    monkeypatch.setenv("TERRAPI_SCOPES", "gep")
    monkeypatch.setenv("TERRAPI_AUDIENCE", idp.audience)
    monkeypatch.setenv("STS_BRIDGE_LEEWAY", "1")
    monkeypatch.setattr("sts_bridge.auth.device.default_prompt", approve_with(idp, "alice"))
    assert main(["login", "--no-browser"]) == 0
    err = capsys.readouterr().err
    assert "Logged in as alice" in err

    assert main(["token"]) == 0
    out = capsys.readouterr().out
    token = out.strip()
    assert out == token + "\n" and token.count(".") == 2

    assert main(["whoami", "--json"]) == 0
    whoami = capsys.readouterr().out
    assert "alice" in whoami and idp.users["alice"].sub in whoami
    assert token not in whoami

    cache = user_cache(idp, tmp_path)
    cached = cache.load()
    assert cached is not None and cached.refresh_token
    secrets_seen = [token, cached.refresh_token, cached.id_token or "unused"]

    assert main(["logout"]) == 0
    assert "revoked" in capsys.readouterr().err
    assert main(["token"]) == 4  # ExitStatus.AUTH: login needed
    captured = capsys.readouterr()
    assert "sts-bridge login" in captured.err
    everything = captured.out + captured.err + caplog.text + err + whoami
    for secret in secrets_seen:
        assert secret not in everything


def test_cli_client_credentials_from_env(
    idp: IdentityProvider, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TERRAPI_ISSUER", idp.issuer)
    monkeypatch.setenv("TERRAPI_CLIENT_ID", idp.service_client_id or "")
    monkeypatch.setenv("TERRAPI_CLIENT_SECRET", idp.service_client_secret or "")
    assert main(["token"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.count(".") == 2
    assert main(["whoami"]) == 0
    out = capsys.readouterr().out
    assert idp.service_client_id in out and token not in out
    monkeypatch.setenv("TERRAPI_CLIENT_SECRET", "wrong")
    monkeypatch.setenv("STS_BRIDGE_TOKEN_CACHE", "false")
    assert main(["token"]) == 4
    err = capsys.readouterr().err
    assert "TERRAPI_CLIENT_SECRET" in err and "wrong" not in err


def test_no_token_in_logs_reprs_or_errors(
    idp: IdentityProvider, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    creds = device_login(idp, tmp_path, username="bob")
    creds.refresh()
    token = creds.valid_token()
    texts = [repr(creds), str(creds), repr(token), repr(creds.cache), caplog.text]
    settings = load_settings(issuer=idp.issuer, token=token.access_token, client_secret=None)
    texts.append(repr(settings))
    with pytest.raises(InvalidGrantError) as info:
        RefreshTokenCredentials(
            idp.issuer, idp.cli_client_id or "", refresh_token="bogus-" + token.access_token[:20]
        ).token()
    texts.append(str(info.value))
    joined = "\n".join(texts)
    for secret in (token.access_token, token.refresh_token, token.id_token):
        assert secret and secret not in joined


def test_expiry_is_timezone_aware_and_in_the_future(idp: IdentityProvider, tmp_path: Path) -> None:
    creds = device_login(idp, tmp_path)
    assert creds.expiry is not None
    remaining = (creds.expiry - datetime.now(timezone.utc)).total_seconds()
    assert 0 < remaining <= TTL + 1
