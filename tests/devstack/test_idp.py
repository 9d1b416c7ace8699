"""The local identity provider (devstack/idp.py + devstack/node/provider.mjs)."""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.discovery import OpenIDProviderMetadata, well_known
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from sts_bridge_devstack import idp as idp_module
from sts_bridge_devstack.idp import (
    DEFAULT_AUDIENCE,
    ClientSpec,
    IdentityProvider,
    IdpConfig,
    IdpError,
)

pytestmark = pytest.mark.integration

SEED_SCOPES = "openid email profile offline_access gep"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityProvider]:
    with IdentityProvider(IdpConfig(), workdir=tmp_path_factory.mktemp("idp")) as provider:
        yield provider


def _jwks_client(idp: IdentityProvider) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(idp.jwks_uri, cache_keys=False)


def _verify(idp: IdentityProvider, token: str, *, leeway: float = 0) -> dict:
    key = _jwks_client(idp).get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=DEFAULT_AUDIENCE,
        issuer=idp.issuer,
        leeway=leeway,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )


def _cli_session(idp: IdentityProvider, port: int | None = None) -> OAuth2Session:
    port = port or 40000 + secrets.randbelow(20000)
    return OAuth2Session(
        idp.cli_client_id,
        scope=SEED_SCOPES,
        redirect_uri=f"http://127.0.0.1:{port}/callback",
        code_challenge_method="S256",
    )


def _login(idp: IdentityProvider, username: str, password: str, **extra: str):
    session = _cli_session(idp)
    verifier = generate_token(48)
    url, state = session.create_authorization_url(
        idp.authorization_endpoint, code_verifier=verifier, **extra
    )
    final = idp.complete_browser_login(url, username, password)
    return session, verifier, state, final


# ---------------------------------------------------------------- discovery, keys
def test_discovery(idp: IdentityProvider) -> None:
    md = requests.get(idp.discovery_url, timeout=5).json()
    assert md["issuer"] == idp.issuer
    assert idp.issuer.startswith("http://127.0.0.1:")
    assert md["token_endpoint"] == idp.token_endpoint
    assert md["jwks_uri"] == idp.jwks_uri
    assert md["authorization_endpoint"] == idp.authorization_endpoint
    assert md["device_authorization_endpoint"] == idp.device_authorization_endpoint
    assert md["revocation_endpoint"] == idp.revocation_endpoint
    assert md["code_challenge_methods_supported"] == ["S256"]
    for grant in ("authorization_code", "refresh_token", "client_credentials", DEVICE_GRANT):
        assert grant in md["grant_types_supported"]


def test_jwks_has_exactly_one_key_with_x5c(idp: IdentityProvider) -> None:
    jwks = requests.get(idp.jwks_uri, timeout=5).json()
    assert len(jwks["keys"]) == 1
    key = jwks["keys"][0]
    assert key["kty"] == "RSA"
    assert key["kid"] == idp.jwks["keys"][0]["kid"]
    assert "d" not in key
    assert len(key["x5c"]) >= 1
    cert = x509.load_der_x509_certificate(base64.b64decode(key["x5c"][0]))
    pub = cert.public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    n = int.from_bytes(base64.urlsafe_b64decode(key["n"] + "=" * (-len(key["n"]) % 4)), "big")
    assert pub.public_numbers().n == n


# ---------------------------------------------------------------- the seed notebook
def test_seed_notebook_client_credentials(idp: IdentityProvider) -> None:
    # The seed notebook's cell, unchanged apart from the URL and the client.
    iam_url = idp.issuer
    platform_scopes = ["gep"]
    localdev = False
    t2_oidc_dicovery_url = well_known.get_well_known_url(iam_url, external=True)
    t2_oidc_dicovery = OpenIDProviderMetadata(
        requests.get(t2_oidc_dicovery_url, verify=not (localdev)).json()
    )
    client_id = idp.service_client_id
    client_secret = idp.service_client_secret
    scopes = "openid email profile offline_access" + " ".join([f" {s}" for s in platform_scopes])
    client = OAuth2Session(client_id, client_secret, scope=scopes)
    token_endpoint = t2_oidc_dicovery["token_endpoint"]
    asked_at = int(time.time())
    token = client.fetch_token(token_endpoint, grant_type="client_credentials")
    answered_at = time.time()
    access_token = token["access_token"]
    refresh_token = token["refresh_token"]

    assert jwt.get_unverified_header(access_token)["typ"] == "at+jwt"
    assert jwt.get_unverified_header(access_token)["alg"] == "RS256"
    claims = _verify(idp, access_token)
    assert claims["iss"] == idp.issuer
    assert claims["aud"] == DEFAULT_AUDIENCE
    assert claims["sub"] == client_id
    assert claims["azp"] == client_id
    assert claims["client_id"] == client_id
    assert claims["preferred_username"] == f"service-account-{client_id}"
    assert set(claims["scope"].split()) == set(scopes.split())
    # issued during the call and living one hour (bounded by meaning, not by the clock)
    assert asked_at <= claims["iat"] <= answered_at
    assert claims["exp"] - claims["iat"] == 3600
    assert token["expires_in"] == 3600

    # the refresh token is real: authlib re-sends the session scope, and it works
    refreshed = client.refresh_token(token_endpoint, refresh_token=refresh_token)
    assert refreshed["access_token"] != access_token
    assert refreshed["refresh_token"] != refresh_token
    claims2 = _verify(idp, refreshed["access_token"])
    assert claims2["sub"] == client_id
    assert claims2["preferred_username"] == f"service-account-{client_id}"
    # and again, with the rotated token
    again = client.refresh_token(token_endpoint, refresh_token=refreshed["refresh_token"])
    _verify(idp, again["access_token"])


def test_seed_notebook_literal_client(tmp_path) -> None:
    # A service client registered with the seed's literal id and secret: the
    # notebook cell then runs with only iam_url changed.
    clients = [ClientSpec("app_client", "service", secret="app_client_secret")]
    with IdentityProvider(IdpConfig(clients=clients), workdir=tmp_path) as seed_idp:
        iam_url = seed_idp.issuer
        platform_scopes = ["gep"]
        discovery = OpenIDProviderMetadata(
            requests.get(well_known.get_well_known_url(iam_url, external=True)).json()
        )
        client_id = "app_client"
        client_secret = "app_client_secret"
        scopes = "openid email profile offline_access" + " ".join(
            [f" {s}" for s in platform_scopes]
        )
        client = OAuth2Session(client_id, client_secret, scope=scopes)
        token = client.fetch_token(discovery["token_endpoint"], grant_type="client_credentials")
        assert token["refresh_token"]
        claims = _verify(seed_idp, token["access_token"])
        assert claims["preferred_username"] == "service-account-app_client"


def test_client_credentials_ignores_unknown_scopes_and_skips_refresh_without_offline(
    idp: IdentityProvider,
) -> None:
    resp = requests.post(
        idp.token_endpoint,
        data={"grant_type": "client_credentials", "scope": "openid gep no-such-scope"},
        auth=(idp.service_client_id, idp.service_client_secret),
        timeout=5,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert "refresh_token" not in body
    assert _verify(idp, body["access_token"])["scope"] == "openid gep"


def test_client_credentials_wrong_secret(idp: IdentityProvider) -> None:
    resp = requests.post(
        idp.token_endpoint,
        data={"grant_type": "client_credentials", "scope": SEED_SCOPES},
        auth=(idp.service_client_id, "wrong"),
        timeout=5,
    )
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"


def test_api_client_credentials(idp: IdentityProvider) -> None:
    resp = requests.post(
        idp.token_endpoint,
        data={"grant_type": "client_credentials", "scope": "openid"},
        auth=(idp.api_client_id, idp.api_client_secret),
        timeout=5,
    )
    # the API client is not a service account of the platform
    assert resp.status_code == 400
    assert resp.json()["error"] == "unauthorized_client"


# ---------------------------------------------------------------- authorization code + PKCE
def test_auth_code_pkce_alice(idp: IdentityProvider) -> None:
    session, verifier, state, final = _login(idp, "alice", "alice-password")
    parts = urlsplit(final)
    assert parts.hostname == "127.0.0.1" and parts.path == "/callback"
    query = parse_qs(parts.query)
    assert query["state"] == [state]
    assert query["iss"] == [idp.issuer]
    token = session.fetch_token(
        idp.token_endpoint, authorization_response=final, code_verifier=verifier
    )
    claims = _verify(idp, token["access_token"])
    alice = idp.users["alice"]
    assert claims["sub"] == alice.sub
    assert claims["preferred_username"] == "alice"
    assert claims["email"] == alice.email
    assert claims["groups"] == ["team-a"]
    assert claims["azp"] == idp.cli_client_id
    assert "gep" in claims["scope"].split()
    id_token = jwt.decode(
        token["id_token"],
        _jwks_client(idp).get_signing_key_from_jwt(token["id_token"]).key,
        algorithms=["RS256"],
        audience=idp.cli_client_id,
        issuer=idp.issuer,
    )
    assert id_token["preferred_username"] == "alice"
    assert id_token["groups"] == ["team-a"]

    # authlib re-sends the session scope (with offline_access) when refreshing
    refreshed = session.refresh_token(idp.token_endpoint, refresh_token=token["refresh_token"])
    assert _verify(idp, refreshed["access_token"])["sub"] == alice.sub


def test_auth_code_wrong_verifier_rejected(idp: IdentityProvider) -> None:
    session, _verifier, _state, final = _login(idp, "alice", "alice-password")
    code = parse_qs(urlsplit(final).query)["code"][0]
    resp = requests.post(
        idp.token_endpoint,
        data={
            "grant_type": "authorization_code",
            "client_id": idp.cli_client_id,
            "code": code,
            "redirect_uri": session.redirect_uri,
            "code_verifier": generate_token(48),
        },
        timeout=5,
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"


def test_auth_code_without_pkce_refused(idp: IdentityProvider) -> None:
    session = OAuth2Session(
        idp.cli_client_id, scope="openid", redirect_uri="http://127.0.0.1:5000/callback"
    )
    url, _ = session.create_authorization_url(idp.authorization_endpoint)
    final = idp.complete_browser_login(url, "alice", "alice-password")
    assert parse_qs(urlsplit(final).query)["error"] == ["invalid_request"]


def test_wrong_password_refused(idp: IdentityProvider) -> None:
    with pytest.raises(IdpError, match="login refused"):
        _login(idp, "bob", "not-bobs-password")


def test_loopback_redirect_any_port_but_not_other_hosts(idp: IdentityProvider) -> None:
    for port in (1234, 65000):
        session = _cli_session(idp, port)
        url, _ = session.create_authorization_url(
            idp.authorization_endpoint, code_verifier=generate_token(48)
        )
        assert idp.complete_browser_login(url, "bob", "bob-password").startswith(
            f"http://127.0.0.1:{port}/callback?code="
        )
    evil = OAuth2Session(
        idp.cli_client_id,
        scope="openid",
        redirect_uri="http://evil.example/callback",
        code_challenge_method="S256",
    )
    url, _ = evil.create_authorization_url(
        idp.authorization_endpoint, code_verifier=generate_token(48)
    )
    resp = requests.get(url, allow_redirects=False, timeout=5)
    assert resp.status_code == 400  # error page, no redirect to evil.example


# ---------------------------------------------------------------- device flow
def _device_start(idp: IdentityProvider) -> dict:
    resp = requests.post(
        idp.device_authorization_endpoint,
        data={"client_id": idp.cli_client_id, "scope": SEED_SCOPES},
        timeout=5,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def _device_poll(idp: IdentityProvider, device_code: str) -> requests.Response:
    return requests.post(
        idp.token_endpoint,
        data={
            "client_id": idp.cli_client_id,
            "grant_type": DEVICE_GRANT,
            "device_code": device_code,
        },
        timeout=5,
    )


def test_device_flow_approved(idp: IdentityProvider) -> None:
    start = _device_start(idp)
    assert start["verification_uri"] == idp.device_verification_uri
    assert _device_poll(idp, start["device_code"]).json()["error"] == "authorization_pending"
    idp.approve_device(start["user_code"], "bob", "bob-password")
    resp = _device_poll(idp, start["device_code"])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    claims = _verify(idp, body["access_token"])
    assert claims["preferred_username"] == "bob"
    assert claims["groups"] == ["team-b"]
    assert body["refresh_token"]


def test_device_flow_denied(idp: IdentityProvider) -> None:
    start = _device_start(idp)
    idp.approve_device(start["user_code"], "bob", "bob-password", deny=True)
    resp = _device_poll(idp, start["device_code"])
    assert resp.status_code == 400
    assert resp.json()["error"] == "access_denied"


def test_device_flow_wrong_user_code(idp: IdentityProvider) -> None:
    _device_start(idp)
    with pytest.raises(IdpError, match="not accepted"):
        idp.approve_device("BCDF-GHJK", "bob", "bob-password")


# ---------------------------------------------------------------- refresh, revocation
def _service_token(idp: IdentityProvider) -> dict:
    client = OAuth2Session(idp.service_client_id, idp.service_client_secret, scope=SEED_SCOPES)
    return dict(client.fetch_token(idp.token_endpoint, grant_type="client_credentials"))


def _refresh(idp: IdentityProvider, refresh_token: str) -> requests.Response:
    return requests.post(
        idp.token_endpoint,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(idp.service_client_id, idp.service_client_secret),
        timeout=5,
    )


def test_refresh_rotation(idp: IdentityProvider) -> None:
    first = _service_token(idp)["refresh_token"]
    resp = _refresh(idp, first)
    assert resp.status_code == 200, resp.text
    second = resp.json()["refresh_token"]
    assert second != first
    replay = _refresh(idp, first)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    # replaying a rotated-out token revokes the whole grant
    assert _refresh(idp, second).json()["error"] == "invalid_grant"


def test_cli_refresh_rotation(idp: IdentityProvider) -> None:
    session, verifier, _state, final = _login(idp, "alice", "alice-password")
    token = session.fetch_token(
        idp.token_endpoint, authorization_response=final, code_verifier=verifier
    )
    new = session.refresh_token(idp.token_endpoint, refresh_token=token["refresh_token"])
    assert new["refresh_token"] != token["refresh_token"]
    with pytest.raises(OAuthError) as info:
        session.refresh_token(idp.token_endpoint, refresh_token=token["refresh_token"])
    assert info.value.error == "invalid_grant"


def test_revocation(idp: IdentityProvider) -> None:
    refresh_token = _service_token(idp)["refresh_token"]
    resp = requests.post(
        idp.revocation_endpoint,
        data={"token": refresh_token, "token_type_hint": "refresh_token"},
        auth=(idp.service_client_id, idp.service_client_secret),
        timeout=5,
    )
    assert resp.status_code == 200
    refused = _refresh(idp, refresh_token)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


# ---------------------------------------------------------------- short tokens
def test_five_second_tokens_expire(tmp_path) -> None:
    with IdentityProvider(IdpConfig(access_token_ttl=5), workdir=tmp_path) as short:
        token = _service_token(short)
        assert token["expires_in"] == 5
        claims = _verify(short, token["access_token"])
        assert claims["exp"] - claims["iat"] == 5
        time.sleep(6)
        with pytest.raises(jwt.ExpiredSignatureError):
            _verify(short, token["access_token"])
        # the refresh token outlives the access token
        resp = _refresh(short, token["refresh_token"])
        assert resp.status_code == 200, resp.text
        _verify(short, resp.json()["access_token"])


# ---------------------------------------------------------------- auto approve
def test_auto_approve_with_login_hint(tmp_path) -> None:
    with IdentityProvider(IdpConfig(auto_approve=True), workdir=tmp_path) as auto:
        auto.reset_stats()
        session, verifier, _state, final = _login(auto, "bob", "ignored", login_hint="bob")
        token = session.fetch_token(
            auto.token_endpoint, authorization_response=final, code_verifier=verifier
        )
        assert _verify(auto, token["access_token"])["preferred_username"] == "bob"
        posts = [k for k in auto.stats()["by_path"] if k.startswith("POST /interaction/")]
        assert posts == []  # no form was posted
        # without a login_hint the login page is still shown
        with pytest.raises(IdpError, match="login refused"):
            _login(auto, "bob", "wrong-password")


def test_consent_page_for_a_third_party_client(tmp_path) -> None:
    clients = [ClientSpec("third-party-cli", "cli", first_party=False)]
    with IdentityProvider(IdpConfig(clients=clients), workdir=tmp_path) as other:
        assert other.cli_client_id == "third-party-cli"
        other.reset_stats()
        session, verifier, _state, final = _login(other, "alice", "alice-password")
        token = session.fetch_token(
            other.token_endpoint, authorization_response=final, code_verifier=verifier
        )
        assert _verify(other, token["access_token"])["azp"] == "third-party-cli"
        posted = sorted(
            k.rsplit("/", 1)[1]
            for k in other.stats()["by_path"]
            if k.startswith("POST /interaction/")
        )
        assert posted == ["confirm", "login"]


# ---------------------------------------------------------------- userinfo
def test_userinfo_accepts_jwt_access_tokens(idp: IdentityProvider) -> None:
    session, verifier, _state, final = _login(idp, "alice", "alice-password")
    token = session.fetch_token(
        idp.token_endpoint, authorization_response=final, code_verifier=verifier
    )
    resp = requests.get(
        idp.userinfo_endpoint,
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=5,
    )
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert info["sub"] == idp.users["alice"].sub
    assert info["preferred_username"] == "alice"
    assert info["email"] == idp.users["alice"].email
    assert info["groups"] == ["team-a"]

    service = _service_token(idp)
    resp = requests.get(
        idp.userinfo_endpoint,
        headers={"Authorization": f"Bearer {service['access_token']}"},
        timeout=5,
    )
    assert resp.json()["preferred_username"] == f"service-account-{idp.service_client_id}"

    tampered = token["access_token"][:-4] + (
        "AAAA" if not token["access_token"].endswith("AAAA") else "BBBB"
    )
    resp = requests.get(
        idp.userinfo_endpoint, headers={"Authorization": f"Bearer {tampered}"}, timeout=5
    )
    assert resp.status_code == 401


# ---------------------------------------------------------------- stats
def test_stats_count_requests(idp: IdentityProvider) -> None:
    idp.reset_stats()
    assert idp.stats() == {"total": 0, "by_path": {}}
    _service_token(idp)
    _service_token(idp)
    requests.get(idp.jwks_uri, timeout=5)
    stats = idp.stats()
    assert stats["by_path"] == {"POST /token": 2, "GET /jwks": 1}
    assert stats["total"] == 3


# ---------------------------------------------------------------- lifecycle
def test_start_stop_three_times_leaves_nothing(tmp_path) -> None:
    pids = []
    for _ in range(3):
        provider = IdentityProvider(IdpConfig())
        provider.start()
        workdir = provider.workdir
        assert workdir is not None and workdir.exists()
        pid = provider.pid
        assert pid is not None
        pids.append(pid)
        assert requests.get(provider.discovery_url, timeout=5).status_code == 200
        provider.stop()
        assert not workdir.exists()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert len(set(pids)) == 3


def test_missing_node_modules_says_make_setup(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(idp_module, "NODE_DIR", tmp_path)
    with pytest.raises(IdpError, match="make setup"):
        IdentityProvider(IdpConfig()).start()
