"""A service checks its callers' tokens from the real identity provider (oidc-provider).

alice and bob log in through the IdP's pages (authorization code + PKCE) for
the results service's audience; the verifier fetches the IdP's discovery
document and JWKS itself. Every refusal is built from a real token: another
audience, expired (the verifier's clock two hours on), a forged payload,
``alg: none``, signed by another key under the IdP's ``kid``, another
issuer, a missing scope, a missing group. The FastAPI dependency answers
them with 401/403 and RFC 6750 headers.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from sts_bridge_devstack.keys import generate_signing_jwk
from sts_bridge_devstack.static_issuer import StaticIssuer

from sts_bridge.clock import utc_now
from sts_bridge.errors import CallerRefusedError
from sts_bridge.service import CallerRequirements, CallerVerifier, any_of


@pytest.fixture(scope="module")
def tokens(local_platform: Any) -> dict[str, str]:
    """Tokens of real logins, by what they are for."""
    service = local_platform.exchange_audience
    return {
        "alice": local_platform.user_token("alice", resource=service),
        "bob": local_platform.user_token("bob", resource=service),
        "alice-openid-only": local_platform.user_token("alice", "openid", resource=service),
        "alice-for-the-api": local_platform.user_token("alice"),
    }


def verifier(platform: Any, **kwargs: Any) -> CallerVerifier:
    return CallerVerifier(platform.issuer, platform.exchange_audience, leeway=5, **kwargs)


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    def decode(part: str) -> dict[str, Any]:
        return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))

    header, payload, _ = token.split(".")
    return decode(header), decode(payload)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def refusal(v: CallerVerifier, token: str, **kwargs: Any) -> CallerRefusedError:
    with pytest.raises(CallerRefusedError) as info:
        v.verify(token, **kwargs)
    assert token not in str(info.value) and token not in info.value.www_authenticate()
    return info.value


def test_real_tokens_are_accepted(local_platform: Any, tokens: dict[str, str]) -> None:
    v = verifier(local_platform, requirements=CallerRequirements(scopes=("gep",)))
    alice, bob = v.verify(tokens["alice"]), v.verify(tokens["bob"])
    assert alice.username == "alice" and bob.username == "bob"
    assert alice.subject == local_platform.idp.users["alice"].sub
    assert alice.key != bob.key
    assert v.keys.fetches == 1


def test_refusals_of_real_tokens(local_platform: Any, tokens: dict[str, str]) -> None:
    v = verifier(local_platform)
    header, payload = parts(tokens["alice"])
    signature = tokens["alice"].rsplit(".", 1)[1]

    wrong_audience = refusal(v, tokens["alice-for-the-api"])
    assert "not addressed to urn:sts-bridge:results" in wrong_audience.message

    later = verifier(local_platform, clock=lambda: utc_now() + timedelta(hours=2))
    assert "expired" in refusal(later, tokens["alice"]).message

    forged = f"{b64(header)}.{b64({**payload, 'sub': parts(tokens['bob'])[1]['sub']})}.{signature}"
    assert "signature is not valid" in refusal(v, forged).message

    unsigned = f"{b64({**header, 'alg': 'none'})}.{b64(payload)}."
    assert "algorithm 'none'" in refusal(v, unsigned).message

    impostor = RSAKey.import_key(generate_signing_jwk())
    wrongly_signed = jwt.encode(header, payload, impostor)
    assert "signature is not valid" in refusal(v, wrongly_signed).message

    with StaticIssuer(local_platform.exchange_audience) as other:
        foreign = other.token(sub=payload["sub"], scope="openid gep")
        assert "another issuer" in refusal(v, foreign).message

    for exc in (wrong_audience,):
        assert (exc.status, exc.error) == (401, "invalid_token")


def test_missing_scope_and_group_are_403(local_platform: Any, tokens: dict[str, str]) -> None:
    v = verifier(local_platform)
    needs_gep = CallerRequirements(scopes=("gep",))
    exc = refusal(v, tokens["alice-openid-only"], requirements=needs_gep)
    assert (exc.status, exc.error) == (403, "insufficient_scope")
    assert "lacks the scope gep" in exc.message

    team_a = CallerRequirements(claims=(any_of("groups", "team-a"),))
    assert v.verify(tokens["alice"], team_a).username == "alice"
    exc = refusal(v, tokens["bob"], requirements=team_a)
    assert (exc.status, exc.error) == (403, "insufficient_scope")
    assert "team-a in groups" in exc.message


def test_the_fastapi_dependency(local_platform: Any, tokens: dict[str, str]) -> None:
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from sts_bridge.service import Caller
    from sts_bridge.service.fastapi_auth import caller_dependency

    v = verifier(local_platform, requirements=CallerRequirements(scopes=("gep",)))
    team_a = CallerRequirements(claims=(any_of("groups", "team-a"),))
    app = FastAPI()

    @app.get("/whoami")
    def whoami(caller: Caller = Depends(caller_dependency(v))) -> dict[str, Any]:  # noqa: B008
        return {"user": caller.username}

    @app.get("/team-a")
    def team(caller: Caller = Depends(caller_dependency(v, team_a))) -> dict[str, Any]:  # noqa: B008
        return {"user": caller.username}

    with TestClient(app) as http:

        def get(path: str, token: str | None) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return http.get(path, headers=headers)

        assert get("/whoami", tokens["alice"]).json() == {"user": "alice"}
        assert get("/team-a", tokens["alice"]).json() == {"user": "alice"}

        missing = get("/whoami", None)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"

        wrong = get("/whoami", tokens["alice-for-the-api"])
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        assert "not addressed" in wrong.json()["detail"]

        scope = get("/whoami", tokens["alice-openid-only"])
        assert scope.status_code == 403
        assert 'error="insufficient_scope"' in scope.headers["www-authenticate"]

        group = get("/team-a", tokens["bob"])
        assert group.status_code == 403
        assert tokens["bob"] not in group.text


def test_the_flask_decorator(local_platform: Any, tokens: dict[str, str]) -> None:
    from flask import Flask, g

    from sts_bridge.service.flask_auth import requires_caller

    v = verifier(local_platform, requirements=CallerRequirements(scopes=("gep",)))
    app = Flask("callers")

    @app.get("/team-a")
    @requires_caller(v, CallerRequirements(claims=(any_of("groups", "team-a"),)))
    def team() -> dict[str, Any]:
        return {"user": g.caller.username}

    http = app.test_client()
    ok = http.get("/team-a", headers={"Authorization": f"Bearer {tokens['alice']}"})
    assert (ok.status_code, ok.json) == (200, {"user": "alice"})

    missing = http.get("/team-a")
    assert (missing.status_code, missing.headers["WWW-Authenticate"]) == (401, "Bearer")

    wrong = http.get("/team-a", headers={"Authorization": f"Bearer {tokens['alice-for-the-api']}"})
    assert wrong.status_code == 401
    assert wrong.json["error"] == "invalid_token"

    for token in (tokens["alice-openid-only"], tokens["bob"]):
        refused = http.get("/team-a", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 403
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
        assert token not in refused.get_data(as_text=True)


def test_the_aiohttp_decorator(local_platform: Any, tokens: dict[str, str]) -> None:
    import asyncio

    from aiohttp import ClientSession, web
    from aiohttp.test_utils import TestServer

    from sts_bridge.service.aiohttp_auth import requires_caller

    v = verifier(local_platform, requirements=CallerRequirements(scopes=("gep",)))

    @requires_caller(v, CallerRequirements(claims=(any_of("groups", "team-a"),)))
    async def team(request: web.Request) -> web.StreamResponse:
        return web.json_response({"user": request["caller"].username})

    app = web.Application()
    app.router.add_get("/team-a", team)

    async def scenario() -> list[tuple[int, str, str]]:
        answers = []
        async with TestServer(app, host="127.0.0.1") as server, ClientSession() as http:
            for token in (tokens["alice"], None, tokens["alice-for-the-api"], tokens["bob"]):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with http.get(server.make_url("/team-a"), headers=headers) as answer:
                    answers.append(
                        (
                            answer.status,
                            answer.headers.get("WWW-Authenticate", ""),
                            await answer.text(),
                        )
                    )
        return answers

    ok, missing, wrong, bob = asyncio.run(scenario())
    assert ok[0] == 200 and '"alice"' in ok[2]
    assert missing[:2] == (401, "Bearer")
    assert wrong[0] == 401 and wrong[1].startswith('Bearer error="invalid_token"')
    assert bob[0] == 403 and 'error="insufficient_scope"' in bob[1]
    assert tokens["bob"] not in bob[2]


def test_opaque_tokens_through_introspection(local_platform: Any) -> None:
    """alice's opaque token is introspected at the IdP as the results service's client;
    the answer is cached by the token's hash, never past the token's exp; a client the
    IdP does not let introspect gets ``active: false``."""
    from sts_bridge_devstack.idp import OPAQUE_CLI_CLIENT_ID

    from sts_bridge.service import TokenIntrospection

    idp = local_platform.idp
    token = local_platform.user_token(
        "alice", resource=local_platform.exchange_audience, client_id=OPAQUE_CLI_CLIENT_ID
    )
    assert "." not in token
    now = [utc_now()]
    introspection = TokenIntrospection(
        idp.issuer,
        idp.exchange_client_id,
        idp.exchange_client_secret,
        cache_seconds=4 * 3600,
        clock=lambda: now[0],
    )
    v = verifier(
        local_platform,
        introspection=introspection,
        requirements=CallerRequirements(scopes=("gep",), claims=(any_of("groups", "team-a"),)),
        clock=lambda: now[0],
    )
    alice = v.verify(token)
    assert alice.subject == idp.users["alice"].sub and alice.username == "alice"
    assert "gep" in alice.scopes
    v.verify(token)
    assert introspection.calls == 1  # the second answer came from the cache
    assert token not in repr(introspection) and token not in repr(vars(introspection))
    assert token not in repr(alice)

    # the cached answer does not outlive the token: past its exp, the issuer is asked again
    # (and still says active, its clock being the real one), then the verifier's exp check refuses
    now[0] = alice.expiry + timedelta(seconds=10)  # past the leeway too
    assert "expired" in refusal(v, token).message
    assert introspection.calls == 2

    lacking = refusal(
        verifier(
            local_platform,
            introspection=introspection,
            requirements=CallerRequirements(claims=(any_of("groups", "curators"),)),
        ),
        token,
    )
    assert lacking.status == 403 and lacking.error == "insufficient_scope"

    not_allowed = TokenIntrospection(
        idp.issuer, idp.service_client_id, idp.service_client_secret, cache_seconds=0
    )
    refused = refusal(verifier(local_platform, introspection=not_allowed), token)
    assert refused.status == 401 and "not active" in refused.message
    assert "is not a signed JWT" in refusal(verifier(local_platform), token).message
