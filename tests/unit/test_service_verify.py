"""CallerVerifier and IssuerKeys: every refusal, with a fixed clock.

The issuer's keys come from a real loopback ``StaticIssuer`` (discovery +
JWKS); the tokens are built here so that each test controls header and
claims exactly (alg ``none``, HS256 signed with the public key, forged
payloads). The same refusals against the real oidc-provider:
tests/integration/test_service_callers.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from sts_bridge_devstack.keys import generate_signing_jwk
from sts_bridge_devstack.static_issuer import StaticIssuer

from sts_bridge.errors import CallerRefusedError
from sts_bridge.service import (
    CallerRequirements,
    CallerVerifier,
    IssuerKeys,
    all_of,
    any_of,
)

AUDIENCE = "urn:example:results"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def issuer() -> Iterator[StaticIssuer]:
    with StaticIssuer(AUDIENCE) as running:
        yield running


def claims(issuer: StaticIssuer, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": issuer.url,
        "sub": "alice-sub",
        "aud": AUDIENCE,
        "iat": int(NOW.timestamp()) - 10,
        "exp": int(NOW.timestamp()) + 300,
        "scope": "openid gep",
        "groups": ["team-a"],
        "wlcg.groups": ["/team-a", "/team-a/analysis"],
        "eduperson_entitlement": ["urn:mace:example:group:team-a"],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(private_jwk: dict[str, Any], payload: dict[str, Any], **header: Any) -> str:
    key = RSAKey.import_key(private_jwk)
    return jwt.encode({"alg": "RS256", "kid": private_jwk["kid"], **header}, payload, key)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def verifier(issuer: StaticIssuer, **kwargs: Any) -> CallerVerifier:
    return CallerVerifier(issuer.url, AUDIENCE, clock=lambda: NOW, **kwargs)


def refused(v: CallerVerifier, token: str, **kwargs: Any) -> CallerRefusedError:
    with pytest.raises(CallerRefusedError) as info:
        v.verify(token, **kwargs)
    exc = info.value
    assert token not in str(exc) and token not in exc.www_authenticate()
    assert "\n" not in exc.message
    return exc


def test_a_valid_token_gives_the_caller(issuer: StaticIssuer) -> None:
    token = sign(issuer.private_jwk, claims(issuer))
    caller = verifier(issuer).verify(token)
    assert caller.key == (issuer.url, "alice-sub")
    assert caller.scopes == {"openid", "gep"}
    assert caller.expiry == NOW + timedelta(seconds=300)
    assert token not in repr(caller)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"aud": "urn:example:other"}, "not addressed to urn:example:results"),
        ({"aud": ["terrapi", "urn:other"]}, "not addressed"),
        ({"exp": int(NOW.timestamp()) - 31}, "expired"),
        ({"exp": None}, "no expiry"),
        ({"nbf": int(NOW.timestamp()) + 31}, "not valid yet"),
        ({"iat": int(NOW.timestamp()) + 120}, "issued in the future"),
        ({"sub": None}, "no subject"),
    ],
)
def test_registered_claims_are_checked(
    issuer: StaticIssuer, changes: dict[str, Any], why: str
) -> None:
    exc = refused(verifier(issuer), sign(issuer.private_jwk, claims(issuer, **changes)))
    assert (exc.status, exc.error) == (401, "invalid_token")
    assert why in exc.message


def test_the_leeway_tolerates_small_skew(issuer: StaticIssuer) -> None:
    token = sign(
        issuer.private_jwk,
        claims(issuer, exp=int(NOW.timestamp()) - 5, nbf=int(NOW.timestamp()) + 5),
    )
    assert verifier(issuer, leeway=10).verify(token).subject == "alice-sub"
    refused(verifier(issuer, leeway=1), token)


def test_alg_none_is_refused(issuer: StaticIssuer) -> None:
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(issuer))}."
    assert "algorithm 'none' is not accepted" in refused(verifier(issuer), token).message


def test_hs256_signed_with_the_public_key_is_refused(issuer: StaticIssuer) -> None:
    # The classic confusion: the public key (which anyone can fetch) used as an HMAC secret.
    # joserfc refuses to build such a key, so the MAC is computed by hand.
    public = RSAKey.import_key(issuer.private_jwk).as_pem(private=False)
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims(issuer))}"
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert "algorithm 'HS256' is not accepted" in refused(verifier(issuer), token).message


def test_unsafe_algorithms_cannot_be_allowed(issuer: StaticIssuer) -> None:
    for algorithms in (["RS256", "none"], ["HS256"], []):
        with pytest.raises(ValueError, match="asymmetric"):
            CallerVerifier(issuer.url, AUDIENCE, algorithms=algorithms)


def test_a_forged_payload_fails_the_signature(issuer: StaticIssuer) -> None:
    header, _, signature = sign(issuer.private_jwk, claims(issuer)).split(".")
    forged = f"{header}.{b64(claims(issuer, sub='mallory'))}.{signature}"
    assert "signature is not valid" in refused(verifier(issuer), forged).message


def test_a_token_signed_by_another_key_with_the_issuers_kid(issuer: StaticIssuer) -> None:
    other = {**generate_signing_jwk(), "kid": issuer.private_jwk["kid"]}
    token = sign(other, claims(issuer))
    assert "signature is not valid" in refused(verifier(issuer), token).message


def test_another_issuer_is_refused_before_any_key_fetch(issuer: StaticIssuer) -> None:
    keys = IssuerKeys(issuer.url)
    v = verifier(issuer, keys=keys)
    with StaticIssuer(AUDIENCE) as foreign:
        token = sign(foreign.private_jwk, claims(foreign))
        assert "another issuer" in refused(v, token).message
        # claiming to be ours while signed by the foreign key: an unknown key
        spoofed = sign(foreign.private_jwk, claims(issuer))
        assert "key the issuer does not publish" in refused(v, spoofed).message
    assert keys.fetches == 1


def test_garbage_is_one_line(issuer: StaticIssuer) -> None:
    v = verifier(issuer)
    for token in ("", "abc", "a.b.c", "a.b", "ééé.b.c"):
        with pytest.raises(CallerRefusedError) as info:
            v.verify(token)
        assert info.value.status == 401 and "\n" not in info.value.message


def test_missing_scope_is_403_insufficient_scope(issuer: StaticIssuer) -> None:
    v = verifier(issuer, requirements=CallerRequirements(scopes=("gep",)))
    token = sign(issuer.private_jwk, claims(issuer, scope="openid"))
    exc = refused(v, token)
    assert (exc.status, exc.error) == (403, "insufficient_scope")
    assert exc.www_authenticate() == (
        'Bearer error="insufficient_scope", '
        'error_description="the token lacks the scope gep", scope="gep"'
    )
    # scp as a list (Okta, Azure) counts too
    scp = sign(issuer.private_jwk, claims(issuer, scope=None, scp=["gep"]))
    assert v.verify(scp).scopes == {"gep"}


@pytest.mark.parametrize(
    ("requirement", "ok"),
    [
        (any_of("groups", "team-a", "team-b"), True),
        (any_of("groups", "team-b"), False),
        (all_of("wlcg.groups", "/team-a", "/team-a/analysis"), True),
        (all_of("wlcg.groups", "/team-a", "/team-b"), False),
        (any_of("eduperson_entitlement", "urn:mace:example:group:team-a"), True),
        (any_of("missing-claim", "x"), False),
    ],
)
def test_claim_requirements(issuer: StaticIssuer, requirement: Any, ok: bool) -> None:
    token = sign(issuer.private_jwk, claims(issuer))
    v = verifier(issuer)
    wanted = CallerRequirements(claims=(requirement,))
    if ok:
        assert v.verify(token, wanted).subject == "alice-sub"
    else:
        exc = refused(v, token, requirements=wanted)
        assert exc.status == 403 and requirement.claim in exc.message


def test_the_authorization_header(issuer: StaticIssuer) -> None:
    v = verifier(issuer)
    token = sign(issuer.private_jwk, claims(issuer))
    assert v.verify_header(f"Bearer {token}").subject == "alice-sub"
    assert v.verify_header(f"bearer  {token} ").subject == "alice-sub"
    with pytest.raises(CallerRefusedError) as missing:
        v.verify_header(None)
    assert (missing.value.status, missing.value.www_authenticate()) == (401, "Bearer")
    with pytest.raises(CallerRefusedError) as basic:
        v.verify_header("Basic dXNlcjpwdw==")
    assert basic.value.error == "invalid_token"


def test_an_unknown_kid_refetches_once_then_rate_limits(issuer: StaticIssuer) -> None:
    ticks = [1000.0]
    keys = IssuerKeys(issuer.url, min_refresh_interval=60, monotonic=lambda: ticks[0])
    v = verifier(issuer, keys=keys)
    v.verify(sign(issuer.private_jwk, claims(issuer)))
    assert keys.fetches == 1
    old = issuer.private_jwk
    issuer.private_jwk = generate_signing_jwk()  # the issuer rotates its key
    try:
        ticks[0] += 61
        rotated = sign(issuer.private_jwk, claims(issuer))
        assert v.verify(rotated).subject == "alice-sub"
        assert keys.fetches == 2
        # made-up kids right after do not make the service fetch again
        for n in range(5):
            made_up = sign({**generate_signing_jwk(), "kid": f"made-up-{n}"}, claims(issuer))
            refused(v, made_up)
        assert keys.fetches == 2
        ticks[0] += 61
        refused(v, sign({**generate_signing_jwk(), "kid": "made-up-x"}, claims(issuer)))
        assert keys.fetches == 3
    finally:
        issuer.private_jwk = old


def test_many_threads_meeting_an_unknown_kid_fetch_once(issuer: StaticIssuer) -> None:
    keys = IssuerKeys(issuer.url)
    v = verifier(issuer, keys=keys)
    token = sign(issuer.private_jwk, claims(issuer))
    start = threading.Barrier(16)
    subjects: list[str] = []

    def call() -> None:
        start.wait()
        subjects.append(v.verify(token).subject)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert subjects == ["alice-sub"] * 16
    assert keys.fetches == 1
