"""The reference service (examples/results_service.py) under uvicorn, beside the local platform.

alice, bob and carol (a member of ``curators``) log in through the IdP's
pages for the service's audience and call it over HTTP on 127.0.0.1: each
result lands in the caller's own workspace, the link serves it, each caller
lists only their own results, bad tokens are refused with the right status,
opaque tokens are introspected at the IdP, a route for curators admits carol
only, and a small concurrent load of the three runs with 0 errors and one
token exchange and one STS call per user (counted on the IdP and the
reference API). The service's DEBUG log holds no token. Its transfer
threads run below the loop's priority; with RESULTS_FORWARD_TOKEN=1 it
forwards callers' tokens instead of exchanging them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from sts_bridge_devstack.idp import OPAQUE_CLI_CLIENT_ID
from sts_bridge_devstack.results_service import ResultsService
from sts_bridge_devstack.static_issuer import StaticIssuer

from sts_bridge import Client
from sts_bridge.auth.static import StaticToken
from sts_bridge.config import Settings

JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def start_service(platform: Any, workdir: Path) -> ResultsService:
    return ResultsService(
        platform, workdir, RESULTS_GROUPS="team-a,team-b", RESULTS_LOG_LEVEL="DEBUG"
    )


@pytest.fixture(scope="module")
def service(local_platform: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    running = start_service(local_platform, tmp_path_factory.mktemp("results-service"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def tokens(local_platform: Any) -> dict[str, str]:
    audience = local_platform.exchange_audience
    return {
        "alice": local_platform.user_token("alice", resource=audience),
        "bob": local_platform.user_token("bob", resource=audience),
        "carol": local_platform.user_token("carol", resource=audience),
        "alice-openid-only": local_platform.user_token("alice", "openid", resource=audience),
        "alice-for-the-api": local_platform.user_token("alice"),
    }


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_results_land_in_the_callers_own_workspace(
    local_platform: Any, service: ResultsService, tokens: dict[str, str]
) -> None:
    body = f"alice's result {uuid.uuid4()}".encode()
    stored = service.call("POST", "/results", tokens["alice"], data=body)
    assert stored.status_code == 201, stored.text
    answer = stored.json()
    assert answer["size"] == len(body)
    assert requests.get(answer["url"], timeout=10).content == body
    # stored under alice's own workspace, as the API describes it to alice herself
    own = Client(
        Settings(api_url=local_platform.api_url),
        credentials=StaticToken(tokens["alice-for-the-api"]),
        cache=False,
    ).workspace()
    assert [o.size for o in own.list(answer["key"])] == [len(body)]

    alice = service.call("GET", "/results", tokens["alice"]).json()
    bob = service.call("GET", "/results", tokens["bob"]).json()
    assert alice["workspace"] == "gep-alice-private-workspace"
    assert bob["workspace"] == "gep-bob-private-workspace"
    assert answer["key"] in [r["key"] for r in alice["results"]]
    assert answer["key"] not in [r["key"] for r in bob["results"]]


def test_a_large_body_is_streamed_multipart(
    service: ResultsService, tokens: dict[str, str]
) -> None:
    body = os.urandom(20 << 20)
    stored = service.call("POST", "/results", tokens["bob"], data=body)
    assert stored.status_code == 201, stored.text
    assert requests.get(stored.json()["url"], timeout=60).content == body


def _nice_values(pid: int) -> dict[int, int]:
    """Each thread's nice value (field 19 of /proc/<pid>/task/<tid>/stat)."""
    values = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        values[int(task.name)] = int(stat.rsplit(")", 1)[1].split()[16])
    return values


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux threads' nice values")
def test_the_transfers_run_below_the_loops_priority(
    service: ResultsService, tokens: dict[str, str]
) -> None:
    """RESULTS_TRANSFER_NICE's default: after an upload, the threads that carried
    it out run at nice 10, the event loop's thread (the main one) at its own."""
    stored = service.call("POST", "/results", tokens["alice"], data=b"n" * 1024)
    assert stored.status_code == 201, stored.text
    nice = _nice_values(service.pid)
    loop = nice.pop(service.pid)
    assert 10 in nice.values() and loop < 10, (loop, nice)


def test_bad_tokens_are_refused(
    local_platform: Any, service: ResultsService, tokens: dict[str, str]
) -> None:
    header, payload, signature = tokens["alice"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    bob_sub = json.loads(
        base64.urlsafe_b64decode(
            tokens["bob"].split(".")[1] + "=" * (-len(tokens["bob"].split(".")[1]) % 4)
        )
    )["sub"]
    with StaticIssuer(local_platform.exchange_audience) as other:
        foreign = other.token(sub=claims["sub"], scope="openid gep", groups=["team-a"])
    expired = {**claims, "exp": claims["iat"] - 3600}
    cases = {
        "no token": (None, 401),
        "another audience": (tokens["alice-for-the-api"], 401),
        "forged": (f"{header}.{b64({**claims, 'sub': bob_sub})}.{signature}", 401),
        "expired (re-signed payload)": (f"{header}.{b64(expired)}.{signature}", 401),
        "alg none": (f"{b64({'alg': 'none', 'typ': 'at+jwt'})}.{payload}.", 401),
        "another issuer": (foreign, 401),
        "missing scope": (tokens["alice-openid-only"], 403),
    }
    for name, (token, status) in cases.items():
        for method in ("GET", "POST"):
            answer = service.call(method, "/results", token, data=b"x")
            assert answer.status_code == status, (name, method, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer"), name
            if token:
                assert token not in answer.text and token not in str(answer.headers)
            assert "\n" not in answer.json()["detail"]


def opaque_token(platform: Any, username: str, resource: str | None) -> str:
    token = platform.user_token(username, resource=resource, client_id=OPAQUE_CLI_CLIENT_ID)
    assert "." not in token  # not a JWT: only the issuer knows what it holds
    return str(token)


def test_opaque_tokens_are_introspected_at_the_issuer(
    local_platform: Any, service: ResultsService
) -> None:
    audience = local_platform.exchange_audience
    alice = opaque_token(local_platform, "alice", audience)
    introspections = local_platform.idp_stats()["by_path"].get("POST /token/introspection", 0)

    stored = service.call("POST", "/results", alice, data=b"opaque alice")
    assert stored.status_code == 201, stored.text
    listed = service.call("GET", "/results", alice)
    assert listed.status_code == 200, listed.text
    assert listed.json()["workspace"] == "gep-alice-private-workspace"
    assert stored.json()["key"] in [r["key"] for r in listed.json()["results"]]
    # two requests, one introspection: the answer is cached (by the token's hash)
    after = local_platform.idp_stats()["by_path"].get("POST /token/introspection", 0)
    assert after - introspections == 1

    revoked = opaque_token(local_platform, "bob", audience)
    requests.post(
        local_platform.idp.revocation_endpoint,
        data={
            "token": revoked,
            "token_type_hint": "access_token",
            "client_id": OPAQUE_CLI_CLIENT_ID,
        },
        timeout=10,
    ).raise_for_status()
    cases = {
        "revoked": (revoked, "not active"),
        "another audience": (opaque_token(local_platform, "alice", None), "not addressed"),
        "unknown to the issuer": ("x" * 43, "not active"),
    }
    for name, (token, why) in cases.items():
        answer = service.call("GET", "/results", token)
        assert answer.status_code == 401, (name, answer.text)
        assert why in answer.json()["detail"], name
        assert 'error="invalid_token"' in answer.headers["www-authenticate"], name
        assert token not in answer.text and token not in str(answer.headers)
    assert alice not in service.read_log() and revoked not in service.read_log()


def test_a_token_the_issuer_will_not_exchange_is_refused_401(
    local_platform: Any, tmp_path: Path
) -> None:
    """alice's opaque token passes the service's check (the introspection answer
    is cached), is revoked at the issuer, and is then presented for her first
    exchange: the issuer refuses it, and the service answers 401 invalid_token
    with the reason, not 502."""
    fresh = start_service(local_platform, tmp_path)  # alice has no state here yet
    try:
        alice = opaque_token(local_platform, "alice", local_platform.exchange_audience)
        # checked (introspected, cached) but not exchanged: the curators' route refuses her
        checked = fresh.call("DELETE", "/results", alice)
        assert checked.status_code == 403, checked.text
        requests.post(
            local_platform.idp.revocation_endpoint,
            data={
                "token": alice,
                "token_type_hint": "access_token",
                "client_id": OPAQUE_CLI_CLIENT_ID,
            },
            timeout=10,
        ).raise_for_status()
        posts_before = local_platform.idp_stats()["by_path"].get("POST /token", 0)
        answer = fresh.call("POST", "/results", alice, data=b"never stored")
        assert local_platform.idp_stats()["by_path"].get("POST /token", 0) == posts_before + 1
        assert answer.status_code == 401, answer.text
        detail = answer.json()["detail"]
        assert "refused to exchange the caller's token" in detail, detail
        assert "\n" not in detail
        header = answer.headers["www-authenticate"]
        assert header.startswith('Bearer error="invalid_token"'), header
        assert alice not in answer.text and alice not in header
        assert alice not in fresh.read_log()
    finally:
        fresh.stop()


def test_a_forwarded_token_reaches_the_api_unchanged(local_platform: Any, tmp_path: Path) -> None:
    """RESULTS_FORWARD_TOKEN=1 on a platform whose API accepts the tokens callers
    send the service (the service's audience is the API's): bob's result lands
    in his own workspace and the IdP sees no token exchange."""
    fresh = ResultsService(
        local_platform,
        tmp_path,
        RESULTS_AUDIENCE=local_platform.audience,
        RESULTS_FORWARD_TOKEN="1",
        RESULTS_LOG_LEVEL="DEBUG",
    )
    try:
        bob = local_platform.user_token("bob")  # addressed to the API itself
        posts_before = local_platform.idp_stats()["by_path"].get("POST /token", 0)
        stored = fresh.call("POST", "/results", bob, data=b"forwarded")
        assert stored.status_code == 201, stored.text
        listed = fresh.call("GET", "/results", bob).json()
        assert local_platform.idp_stats()["by_path"].get("POST /token", 0) == posts_before
        assert listed["workspace"] == "gep-bob-private-workspace"
        assert stored.json()["key"] in [r["key"] for r in listed["results"]]
        assert bob not in fresh.read_log()
    finally:
        fresh.stop()


def test_an_expired_forwarded_token_is_refused_401(
    short_lived_platform: Any, tmp_path: Path
) -> None:
    """bob's token of 5 s, presented once its expiry has passed: the service's
    check admits it (30 s of clock skew), forwarding it does not: 401
    invalid_token with an RFC 6750 header and the reason, not a 502."""
    platform = short_lived_platform
    fresh = ResultsService(
        platform,
        tmp_path,
        RESULTS_AUDIENCE=platform.audience,
        RESULTS_FORWARD_TOKEN="1",
        RESULTS_LOG_LEVEL="DEBUG",
    )
    try:
        bob = platform.user_token("bob")
        expiry = json.loads(base64.urlsafe_b64decode(bob.split(".")[1] + "==="))["exp"]
        while time.time() < expiry + 1:  # past its expiry by the second it names
            time.sleep(0.1)
        answer = fresh.call("POST", "/results", bob, data=b"never stored")
        assert answer.status_code == 401, answer.text
        header = answer.headers["www-authenticate"]
        assert header.startswith('Bearer error="invalid_token"'), header
        detail = answer.json()["detail"]
        assert "expires within the leeway" in detail and "\n" not in detail, detail
        assert bob not in answer.text and bob not in header
        assert bob not in fresh.read_log()
    finally:
        fresh.stop()


def test_a_route_for_a_group_admits_its_members_only(
    service: ResultsService, tokens: dict[str, str]
) -> None:
    assert service.call("POST", "/results", tokens["carol"], data=b"c").status_code == 201
    refused = service.call("DELETE", "/results", tokens["alice"])
    assert refused.status_code == 403, refused.text
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert "curators" in refused.json()["detail"]
    cleared = service.call("DELETE", "/results", tokens["carol"])
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["deleted"] >= 1
    assert service.call("GET", "/results", tokens["carol"]).json()["results"] == []


def test_a_concurrent_load_exchanges_once_per_user(
    local_platform: Any, tmp_path: Path, tokens: dict[str, str]
) -> None:
    """3 users x 33 concurrent requests on a fresh service: 0 errors, one exchange
    (IdP POST /token) and one STS call (reference API) per user."""
    # a fresh service process: the users it serves have no state yet
    fresh = start_service(local_platform, tmp_path)
    try:
        _load(local_platform, fresh, tokens)
    finally:
        fresh.stop()


def _load(local_platform: Any, fresh: ResultsService, tokens: dict[str, str]) -> None:
    idp_before = local_platform.idp_stats()["by_path"].get("POST /token", 0)
    sts_before = local_platform.api_stats()["sts_exchanges"]

    def one(i: int) -> int:
        who = ("alice", "bob", "carol")[i % 3]
        if i % 5 == 0:
            return int(fresh.call("GET", "/results", tokens[who]).status_code)
        return int(fresh.call("POST", "/results", tokens[who], data=b"r" * 1024).status_code)

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(99)))
    errors = [s for s in statuses if s not in (200, 201)]
    assert errors == []
    assert local_platform.idp_stats()["by_path"].get("POST /token", 0) - idp_before == 3
    assert local_platform.api_stats()["sts_exchanges"] - sts_before == 3

    log = fresh.read_log()
    assert "DEBUG" in log  # the sweep looks at a DEBUG log
    assert not JWT.findall(log)
    # botocore's DEBUG request lines name the session token and signature: masked
    assert "X-Amz-Security-Token" in log
    assert not re.search(r"(X-Amz-Security-Token|Authorization)': b'(?!\*\*\*)", log)
    for token in tokens.values():
        assert token not in log


def test_tokens_and_credentials_refresh_under_load(platform_factory: Any, tmp_path: Path) -> None:
    """Exchanged tokens and STS credentials of 5 s: requests keep coming from two
    users until each has been re-exchanged and re-credentialed several times,
    with no failed request and no more renewals than their lifetimes allow."""
    platform = platform_factory(sts_duration=5, exchange_token_ttl=5)
    audience = platform.exchange_audience
    tokens = {n: platform.user_token(n, resource=audience) for n in ("alice", "bob")}
    service = ResultsService(platform, tmp_path)
    try:
        idp_before = platform.idp_stats()["by_path"].get("POST /token", 0)
        sts_before = platform.api_stats()["sts_exchanges"]
        started = time.monotonic()
        statuses: list[int] = []

        def one(i: int) -> int:
            who = ("alice", "bob")[i % 2]
            return int(service.call("POST", "/results", tokens[who], data=b"x").status_code)

        def renewals() -> tuple[int, int]:
            return (
                platform.idp_stats()["by_path"].get("POST /token", 0) - idp_before,
                platform.api_stats()["sts_exchanges"] - sts_before,
            )

        with ThreadPoolExecutor(8) as pool:
            while min(renewals()) < 2 * 3:  # three of each per user at least
                statuses += list(pool.map(one, range(16)))
        elapsed = time.monotonic() - started
    finally:
        service.stop()
    assert [s for s in statuses if s != 201] == []
    # never more than one renewal per half lifetime per user (leeway <= half the life)
    ceiling = 2 * (int(elapsed / 2.5) + 2)
    exchanges, sts = renewals()
    assert exchanges <= ceiling and sts <= ceiling, (exchanges, sts, elapsed)
