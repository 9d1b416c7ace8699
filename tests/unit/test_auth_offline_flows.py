"""Flows without a network: static, command, authenticator, factory, device polling, ID tokens."""

from __future__ import annotations

import base64
import json
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from sts_bridge.auth import (
    AuthenticatorCredentials,
    BrowserCredentials,
    ClientCredentials,
    CommandToken,
    DeviceCodeCredentials,
    ProviderMetadata,
    RefreshTokenCredentials,
    StaticToken,
    credentials_from_settings,
    validate_id_token,
)
from sts_bridge.auth.device import run_device_flow
from sts_bridge.auth.oauth import map_oauth_error
from sts_bridge.config import load_settings
from sts_bridge.errors import (
    AccessDeniedError,
    AuthError,
    ConfigurationError,
    InvalidClientError,
    InvalidGrantError,
    LoginRequiredError,
    LoginTimeoutError,
    TokenExpiredError,
)

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("TERRAPI_", "STS_BRIDGE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STS_BRIDGE_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("STS_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))


def jwt_for(payload: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(payload)}.sig"


# ------------------------------------------------------------- static / command / plug-in


def test_static_token_expires_with_a_clear_error() -> None:
    now = [T0]
    token = jwt_for({"exp": int((T0 + timedelta(minutes=1)).timestamp()), "sub": "x"})
    creds = StaticToken(token, clock=lambda: now[0])
    assert creds.token() == token and creds.subject == "x"
    now[0] = T0 + timedelta(minutes=2)
    with pytest.raises(TokenExpiredError) as info:
        creds.token()
    assert token not in str(info.value) and "TERRAPI_TOKEN" in str(info.value)
    assert StaticToken("opaque").expiry is None


def test_command_token_bare_json_and_failures(tmp_path: Path) -> None:
    script = tmp_path / "tok.py"
    script.write_text(
        "import json, sys\n"
        "mode = sys.argv[1]\n"
        "if mode == 'bare': print('opaque-token-value')\n"
        "elif mode == 'json': print(json.dumps({'access_token': 'j-token', 'expires_in': 60}))\n"
        "else:\n"
        "    print('failed: access_token=leaked-value', file=sys.stderr); sys.exit(3)\n"
    )
    now = [T0]
    bare = CommandToken(f"{sys.executable} {script} bare", max_age=30, clock=lambda: now[0])
    assert bare.token() == "opaque-token-value"
    assert bare.expiry == T0 + timedelta(seconds=30)
    as_json = CommandToken([sys.executable, str(script), "json"], leeway=0, clock=lambda: now[0])
    assert as_json.token() == "j-token" and as_json.expiry == T0 + timedelta(seconds=60)
    with pytest.raises(AuthError) as info:
        CommandToken([sys.executable, str(script), "fail"]).token()
    assert "exit status 3" in str(info.value) and "leaked-value" not in str(info.value)
    with pytest.raises(ConfigurationError, match="not found"):
        CommandToken("no-such-command-sts-bridge").token()


def test_user_authenticator() -> None:
    calls = []

    def authenticator() -> tuple[str, datetime | None]:
        calls.append(1)
        return f"custom-{len(calls)}", datetime.now(timezone.utc) + timedelta(hours=1)

    creds = AuthenticatorCredentials(authenticator)
    assert creds.token() == "custom-1" == creds.token()
    creds.refresh()
    assert creds.token() == "custom-2"


def plugin_authenticator() -> tuple[str, datetime | None]:
    return "from-plugin", None


def test_flow_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"issuer": "https://idp.example"}
    assert isinstance(
        credentials_from_settings(load_settings(**base, token="t"), interactive=False),
        StaticToken,
    )
    assert isinstance(
        credentials_from_settings(
            load_settings(**base, token_command="oidc-token x"), interactive=False
        ),
        CommandToken,
    )
    monkeypatch.setenv("TERRAPI_CLIENT_ID", "svc")
    monkeypatch.setenv("TERRAPI_CLIENT_SECRET", "sec")
    assert isinstance(
        credentials_from_settings(load_settings(**base), interactive=False), ClientCredentials
    )
    # an explicit flow wins over everything else
    device = credentials_from_settings(load_settings(**base, flow="device"), interactive=True)
    assert isinstance(device, DeviceCodeCredentials)
    monkeypatch.delenv("TERRAPI_CLIENT_SECRET")
    monkeypatch.delenv("TERRAPI_CLIENT_ID")
    with pytest.raises(LoginRequiredError) as info:
        credentials_from_settings(load_settings(**base), interactive=False)
    assert "sts-bridge login" in str(info.value)
    assert isinstance(
        credentials_from_settings(load_settings(**base), interactive=True), BrowserCredentials
    )
    assert isinstance(
        credentials_from_settings(load_settings(**base), interactive=True, no_browser=True),
        DeviceCodeCredentials,
    )
    assert isinstance(
        credentials_from_settings(load_settings(**base, flow="refresh-token"), interactive=False),
        RefreshTokenCredentials,
    )
    plugin = credentials_from_settings(
        load_settings(flow=f"{__name__}:plugin_authenticator"), interactive=False
    )
    assert plugin.token() == "from-plugin"
    with pytest.raises(ConfigurationError) as missing:
        credentials_from_settings(load_settings(), interactive=False)
    assert "TERRAPI_ISSUER" in str(missing.value)
    with pytest.raises(ConfigurationError, match="TERRAPI_CLIENT_SECRET"):
        credentials_from_settings(
            load_settings(**base, flow="client-credentials"), interactive=False
        )


def test_oauth_error_mapping() -> None:
    assert isinstance(map_oauth_error("invalid_client", None, "x"), InvalidClientError)
    grant = map_oauth_error("invalid_grant", "grant request is invalid", "refresh")
    assert isinstance(grant, InvalidGrantError) and "sts-bridge login" in str(grant)
    assert isinstance(map_oauth_error("access_denied", None, "x"), AccessDeniedError)
    assert isinstance(map_oauth_error("expired_token", None, "x"), LoginTimeoutError)
    other = map_oauth_error("server_error", "refresh_token=abc", "x")
    assert "abc" not in str(other)


# ------------------------------------------------------------- device polling (fake provider)


class FakeOAuth:
    def __init__(self, answers: list[str], clock: list[datetime]) -> None:
        self.metadata = ProviderMetadata(
            issuer="https://idp",
            token_endpoint="https://idp/token",
            device_authorization_endpoint="https://idp/device/auth",
        )
        self.answers = answers
        self.clock = clock
        self.polls: list[datetime] = []

    def audience_params(self) -> dict[str, str]:
        return {}

    def post_form(self, url: str, data: dict[str, str], what: str) -> dict[str, Any]:
        assert data["scope"] == "openid offline_access"
        return {
            "device_code": "dc",
            "user_code": "ABCD-EFGH",
            "verification_uri": "https://idp/device",
            "verification_uri_complete": "https://idp/device?user_code=ABCD-EFGH",
            "expires_in": 60,
            "interval": 5,
        }

    def request_token(self, grant_type: str, *, now: datetime, **params: Any) -> Any:
        self.polls.append(self.clock[0])
        answer = self.answers.pop(0) if self.answers else "authorization_pending"
        if answer == "ok":
            from sts_bridge.auth import Token

            return Token(access_token="AT", refresh_token="RT", expiry=now + timedelta(hours=1))
        raise map_oauth_error(answer, None, "device")


def run(answers: list[str]) -> tuple[FakeOAuth, Any, list[Any]]:
    clock = [T0]

    def sleep(seconds: float) -> None:
        clock[0] += timedelta(seconds=seconds)

    fake = FakeOAuth(answers, clock)
    prompts: list[Any] = []
    try:
        result: Any = run_device_flow(
            fake,  # type: ignore[arg-type]
            ("openid", "offline_access"),
            clock=lambda: clock[0],
            prompt=prompts.append,
            sleep=sleep,
        )
    except AuthError as exc:
        result = exc
    return fake, result, prompts


def test_device_flow_polls_and_slows_down() -> None:
    fake, token, prompts = run(["authorization_pending", "slow_down", "ok"])
    assert token.access_token == "AT"
    assert prompts[0].user_code == "ABCD-EFGH" and prompts[0].deadline == T0 + timedelta(minutes=1)
    gaps = [
        (b - a).total_seconds() for a, b in zip([T0, *fake.polls[:-1]], fake.polls, strict=True)
    ]
    assert gaps == [5, 5, 10]


def test_device_flow_deadline_and_denial() -> None:
    _, timeout, _ = run([])
    assert isinstance(timeout, LoginTimeoutError)
    _, denied, _ = run(["authorization_pending", "access_denied"])
    assert isinstance(denied, AccessDeniedError)


def test_default_prompt_prints_everything(capsys: pytest.CaptureFixture[str]) -> None:
    from sts_bridge.auth import DeviceAuthorization, default_prompt

    default_prompt(
        DeviceAuthorization("ABCD", "https://idp/device", "https://idp/device?c=ABCD", T0, 5)
    )
    err = capsys.readouterr().err
    assert "ABCD" in err and "https://idp/device" in err and "valid until" in err


# ------------------------------------------------------------- ID token validation


@pytest.fixture(scope="module")
def signer() -> tuple[Any, dict[str, Any]]:
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"})
    return key, {"keys": [key.as_dict(private=False)]}


def id_token(key: Any, **claims: Any) -> str:
    from joserfc import jwt

    now = int(T0.timestamp())
    payload = {"iss": "https://idp", "aud": "cli", "sub": "u", "iat": now, "exp": now + 300}
    payload.update(claims)
    return jwt.encode({"alg": "RS256", "kid": "k1"}, payload, key)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"nonce": "other"}, "nonce"),
        ({"iss": "https://evil"}, "issuer"),
        ({"aud": "someone-else"}, "another client"),
        ({"exp": int(T0.timestamp()) - 600}, "expired"),
        ({"iat": int(T0.timestamp()) + 3600}, "future"),
    ],
)
def test_id_token_checks(
    signer: tuple[Any, dict[str, Any]], claims: dict[str, Any], reason: str
) -> None:
    key, jwks = signer
    token = id_token(key, **{"nonce": "n1", **claims})
    with pytest.raises(AuthError, match=reason):
        validate_id_token(
            token, jwks=jwks, issuer="https://idp", client_id="cli", nonce="n1", now=T0, leeway=5
        )


def test_id_token_valid_and_bad_signature(signer: tuple[Any, dict[str, Any]]) -> None:
    from joserfc.jwk import RSAKey

    key, jwks = signer
    good = id_token(key, nonce="n1")
    claims = validate_id_token(
        good, jwks=jwks, issuer="https://idp", client_id="cli", nonce="n1", now=T0, leeway=5
    )
    assert claims["sub"] == "u"
    other = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    forged = id_token(other, nonce="n1")
    with pytest.raises(AuthError, match="signature"):
        validate_id_token(
            forged, jwks=jwks, issuer="https://idp", client_id="cli", nonce="n1", now=T0, leeway=5
        )
