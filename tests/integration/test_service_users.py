"""A service acting for many users (ServiceUsers) on the local platform.

alice and bob log in for the results service; the service verifies their
tokens, exchanges each at the real IdP (RFC 8693) for an API token and works
in each user's own workspace. Counted on the servers: one exchange (IdP
``POST /token``) and one STS call (reference API) per user, however many
concurrent requests.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from sts_bridge.config import Settings
from sts_bridge.errors import CallerRefusedError, InvalidGrantError
from sts_bridge.service import Caller, CallerVerifier
from sts_bridge.service.users import ServiceUsers


@pytest.fixture(scope="module")
def logins(local_platform: Any) -> dict[str, str]:
    service = local_platform.exchange_audience
    return {name: local_platform.user_token(name, resource=service) for name in ("alice", "bob")}


@pytest.fixture
def callers(local_platform: Any, logins: dict[str, str]) -> dict[str, Caller]:
    verifier = CallerVerifier(local_platform.issuer, local_platform.exchange_audience)
    return {name: verifier.verify(token) for name, token in logins.items()}


def service_settings(platform: Any, tmp_path: Any) -> Settings:
    return Settings(
        api_url=platform.api_url,
        issuer=platform.issuer,
        client_id=platform.exchange_client_id,
        client_secret=platform.exchange_client_secret,
        audience=platform.audience,
        scopes=("openid", "profile", "gep"),
        workspace="gep-processing-results-a2s-service-workspace",  # the service's own
        cache_dir=tmp_path / "cache",
    )


@pytest.fixture
def users(local_platform: Any, tmp_path: Any) -> Iterator[ServiceUsers]:
    service = ServiceUsers(service_settings(local_platform, tmp_path))
    try:
        yield service
    finally:
        service.close()


def api_counts(platform: Any) -> tuple[int, int]:
    """(STS calls, workspace listings) the reference API has served."""
    stats = platform.api_stats()
    return stats["sts_exchanges"], stats["by_path"].get("GET /core/v2/storage/workspaces", 0)


def token_posts(platform: Any) -> int:
    return int(platform.idp_stats()["by_path"].get("POST /token", 0))


def test_each_caller_works_in_their_own_workspace(
    local_platform: Any, users: ServiceUsers, callers: dict[str, Caller]
) -> None:
    key = f"service-test/{uuid.uuid4().hex}.txt"
    alice_ws = users.workspace(callers["alice"])
    bob_ws = users.workspace(callers["bob"])
    assert alice_ws.name == "gep-alice-private-workspace"
    assert bob_ws.name == "gep-bob-private-workspace"
    alice_ws.upload(b"alice's result", key)
    assert [o.key for o in alice_ws.list("service-test/") if o.key == key] == [key]
    assert key not in [o.key for o in bob_ws.list("service-test/")]
    # the exchanged token acts for alice, on behalf of the service
    claims = users.client(callers["alice"]).credentials.claims
    assert claims["sub"] == callers["alice"].subject
    assert claims["act"] == {"sub": local_platform.exchange_client_id}
    alice_ws.delete(key)


def test_one_exchange_and_one_sts_call_per_user_under_concurrency(
    local_platform: Any, users: ServiceUsers, callers: dict[str, Caller]
) -> None:
    posts_before = token_posts(local_platform)
    sts_before, lists_before = api_counts(local_platform)
    start = threading.Barrier(2 * 12)
    names: dict[str, set[str]] = {"alice": set(), "bob": set()}
    failures: list[BaseException] = []

    def request(who: str) -> None:
        try:
            start.wait()
            ws = users.workspace(callers[who])
            ws.credentials()
            names[who].add(ws.name)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=request, args=(who,)) for who in ("alice", "bob") * 12]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert names == {"alice": {"gep-alice-private-workspace"}, "bob": {"gep-bob-private-workspace"}}
    # each user needs at least one of each: two users, two of each in all
    assert token_posts(local_platform) - posts_before == 2  # exchanges
    sts_after, lists_after = api_counts(local_platform)
    assert (sts_after - sts_before, lists_after - lists_before) == (2, 2)
    for name in callers:
        assert users.client(callers[name]).credentials.refresh_count == 1
    assert users.exchange.calls == 2


def test_the_cache_is_bounded(
    local_platform: Any, tmp_path: Any, callers: dict[str, Caller]
) -> None:
    ticks = [0.0]
    users = ServiceUsers(
        service_settings(local_platform, tmp_path),
        max_users=1,
        idle_seconds=60,
        monotonic=lambda: ticks[0],
    )
    first = users.client(callers["alice"])
    assert users.client(callers["alice"]) is first and len(users) == 1
    users.client(callers["bob"])
    assert len(users) == 1 and users.evictions == 1
    assert users.client(callers["alice"]) is not first  # rebuilt after eviction
    ticks[0] += 61
    users.client(callers["bob"])  # alice idled out, bob rebuilt
    assert len(users) == 1 and users.evictions == 3
    for caller in callers.values():
        assert caller.token not in repr(users) and caller.token not in repr(caller)


def test_a_refused_exchange_refuses_the_caller(
    local_platform: Any, users: ServiceUsers, callers: dict[str, Caller]
) -> None:
    # a caller object built around a token the IdP will not exchange (addressed to the API)
    api_token = local_platform.user_token("alice")
    bogus = Caller(
        issuer=callers["alice"].issuer,
        subject=callers["alice"].subject,
        claims={},
        scopes=frozenset(),
        expiry=callers["alice"].expiry,
        token=api_token,
    )
    with pytest.raises(CallerRefusedError) as info:
        users.workspace(bogus)
    refused = info.value
    assert refused.status == 401 and refused.error == "invalid_token"
    assert "refused to exchange the caller's token" in refused.message
    assert "\n" not in refused.message
    assert api_token not in str(refused) and api_token not in refused.www_authenticate()
    assert isinstance(refused.__cause__, InvalidGrantError)


def test_forwarding_the_callers_token(
    local_platform: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A platform whose API accepts the caller's token as is: no exchange at all."""
    token = local_platform.user_token("bob")  # addressed to the API itself
    caller = CallerVerifier(local_platform.issuer, local_platform.audience).verify(token)
    users = ServiceUsers(service_settings(local_platform, tmp_path), forward_token=True)
    posts_before = token_posts(local_platform)
    with caplog.at_level(logging.DEBUG, logger="sts_bridge"):
        ws = users.workspace(caller)
        assert ws.name == "gep-bob-private-workspace"
        creds = ws.credentials()
    assert token_posts(local_platform) == posts_before
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (token, creds.secret_key, creds.token or "", creds.access_key):
        assert secret not in logged
        assert secret not in repr(users) and secret not in repr(ws)


def test_a_forwarded_token_that_has_expired_is_refused_401(
    local_platform: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """bob's token from the IdP, verified, then forwarded once it has expired (the
    service's clock past its expiry): the caller's problem, 401 invalid_token,
    through the same FastAPI handler as a refused exchange, not a server error."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from fastapi.testclient import TestClient

    from sts_bridge.errors import StsBridgeError
    from sts_bridge.service.fastapi_auth import caller_refused_handler

    token = local_platform.user_token("bob")  # addressed to the API itself
    caller = CallerVerifier(local_platform.issuer, local_platform.audience).verify(token)
    later = caller.expiry + timedelta(seconds=1)
    users = ServiceUsers(
        service_settings(local_platform, tmp_path), forward_token=True, clock=lambda: later
    )
    with pytest.raises(CallerRefusedError) as info:
        users.workspace(caller)
    refused = info.value
    assert refused.status == 401 and refused.error == "invalid_token"
    assert "expired" in refused.message and "\n" not in refused.message
    assert token not in str(refused) and token not in refused.www_authenticate()

    # The reference service's handlers: CallerRefusedError 401, other errors 502.
    app = FastAPI()
    app.add_exception_handler(CallerRefusedError, caller_refused_handler)

    @app.exception_handler(StsBridgeError)
    async def sdk_error(request: Request, exc: StsBridgeError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=502)

    @app.get("/results")
    def results() -> dict[str, str]:
        return {"workspace": users.workspace(caller).name}

    try:
        with caplog.at_level(logging.DEBUG, logger="sts_bridge"), TestClient(app) as http:
            answer = http.get("/results")
        assert answer.status_code == 401, answer.text
        header = answer.headers["www-authenticate"]
        assert header.startswith('Bearer error="invalid_token"'), header
        detail = answer.json()["detail"]
        assert "expired" in detail and "\n" not in detail
        assert token not in answer.text and token not in header
        assert token not in "\n".join(r.getMessage() for r in caplog.records)
    finally:
        users.close()
