"""TerrapiApi against a urllib3-level fake transport (no network)."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import datetime, timezone
from typing import Any

import pytest
import urllib3

from sts_bridge.errors import (
    ApiError,
    ApiUnavailableError,
    NotAuthenticatedError,
    NotFoundError,
    PermissionDeniedError,
)
from sts_bridge.retry import API_RETRY
from sts_bridge.terrapi.api import TerrapiApi, _retry_after

SEED_STS = {
    "storage": {
        "storage_type": "s3",
        "end_point": "https://s3.gep.example/",
        "owner": "ellip-bios-api",
        "type": "urn:resource:storage:workspace",
        "status": {"status_code": "OK", "message": "From Authorization Resource"},
        "resource_uris": ["s3://gep-processing-results/a2s/"],
        "scopes": ["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
        "properties": {
            "bucket": ["gep-processing-results"],
            "key": ["a2s/"],
            "service_url": ["https://s3.gep.example/"],
            "storage_type": ["s3"],
            "platform_id": ["gep"],
        },
        "name": "gep-processing-results-a2s-service-workspace",
    },
    "credentials": {
        "access_key": "AKIDEXAMPLE",
        "secret_key": "s3cr3t",
        "use_token": True,
        "token": "sts.jwt.token",
        "expiration": "2030-01-01T00:00:00Z",
    },
}


class FakeCredentials:
    def __init__(self) -> None:
        self.n = 1
        self.invalidated = 0
        self.subject = "alice-sub"
        self.claims: dict[str, Any] = {}

    def token(self) -> str:
        return f"tok{self.n}"

    def invalidate(self) -> None:
        self.invalidated += 1
        self.n += 1


Reply = tuple[int, Any, dict[str, str]] | Exception


class FakePool:
    """A PoolManager stand-in: replies from a list, records requests."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def request(self, method: str, url: str, **kw: Any) -> urllib3.HTTPResponse:
        self.requests.append((method, url, dict(kw.get("headers") or {})))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        status, body, headers = reply
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return urllib3.HTTPResponse(
            body=io.BytesIO(raw),
            status=status,
            headers={"Content-Type": "application/json", **headers},
            preload_content=False,
            reason="",
        )

    def clear(self) -> None:
        pass


def problem(status: int, detail: str) -> tuple[int, Any, dict[str, str]]:
    return (status, {"type": "about:blank", "title": "t", "status": status, "detail": detail}, {})


def make(*replies: Reply, **kw: Any) -> tuple[TerrapiApi, FakePool, FakeCredentials, list[float]]:
    pool = FakePool(*replies)
    creds = FakeCredentials()
    sleeps: list[float] = []
    api = TerrapiApi(
        "http://api.test/core/",
        creds,  # type: ignore[arg-type]
        pool_manager=pool,
        sleep=sleeps.append,
        clock=lambda: datetime.fromtimestamp(1_000_000.0, timezone.utc),
        **kw,
    )
    return api, pool, creds, sleeps


def test_storage_sts_parses_the_seed_shape_and_sends_the_bearer() -> None:
    api, pool, _, _ = make((200, SEED_STS, {}))
    answer = api.storage_sts("gep-processing-results-a2s-service-workspace")
    assert answer.credentials.access_key == "AKIDEXAMPLE"
    assert answer.storage.properties["bucket"] == ["gep-processing-results"]
    method, url, headers = pool.requests[0]
    assert method == "GET"
    assert url.startswith("http://api.test/core/v2/storage/token?storagePointId=gep-processing")
    assert headers["Authorization"] == "Bearer tok1"


def test_token_is_read_before_every_call() -> None:
    api, pool, creds, _ = make((200, [], {}), (200, [], {}))
    api.workspaces()
    creds.n = 7
    api.workspaces()
    assert [r[2]["Authorization"] for r in pool.requests] == ["Bearer tok1", "Bearer tok7"]


def test_workspace_names() -> None:
    items = [
        {"type": "urn:resource:storage:workspace", "name": "b"},
        {"type": "urn:resource:storage:workspace", "name": "a", "self": "http://x"},
    ]
    api, _, _, _ = make((200, items, {}))
    assert api.workspace_names() == ["a", "b"]


def test_retries_5xx_with_exponential_backoff() -> None:
    api, pool, _, sleeps = make(problem(503, "busy"), problem(502, "busy"), (200, [], {}))
    assert api.workspaces() == []
    assert sleeps == [0.5, 1.0] and len(pool.requests) == 3


def test_honours_retry_after_seconds_and_caps_it() -> None:
    api, _, _, sleeps = make(
        (429, {"detail": "slow down"}, {"Retry-After": "3"}),
        (429, {}, {"Retry-After": "9999"}),
        (200, [], {}),
        retry=dataclasses.replace(API_RETRY, max_delay=10),
    )
    api.workspaces()
    assert sleeps == [3.0, 10.0]


def test_retry_after_http_date() -> None:
    now = datetime.fromtimestamp(1_000_000.0, timezone.utc)
    assert _retry_after({"Retry-After": "Mon, 12 Jan 1970 13:46:40 GMT"}, now) == 0.0
    assert _retry_after({"Retry-After": "Mon, 12 Jan 1970 13:46:45 GMT"}, now) == 5.0
    assert _retry_after({}, now) is None


def test_gives_up_after_retries_with_the_detail() -> None:
    api, pool, _, sleeps = make(*[problem(503, "maintenance until noon")] * 4)
    with pytest.raises(ApiUnavailableError, match="maintenance until noon") as info:
        api.workspaces()
    assert info.value.status == 503 and len(pool.requests) == 4 and len(sleeps) == 3


def test_connection_errors_are_retried_then_unavailable() -> None:
    err = urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]
    api, pool, _, _ = make(err, err, retry=dataclasses.replace(API_RETRY, attempts=2))
    with pytest.raises(ApiUnavailableError, match="could not be reached"):
        api.workspaces()
    assert len(pool.requests) == 2


def test_401_is_retried_once_with_a_fresh_token() -> None:
    api, pool, creds, _ = make(problem(401, "expired"), (200, [], {}))
    api.workspaces()
    assert creds.invalidated == 1
    assert [r[2]["Authorization"] for r in pool.requests] == ["Bearer tok1", "Bearer tok2"]


def test_401_twice_is_not_authenticated_without_the_token_in_the_message() -> None:
    api, _, creds, _ = make(problem(401, "token revoked"), problem(401, "token revoked"))
    with pytest.raises(NotAuthenticatedError, match="token revoked") as info:
        api.workspaces()
    assert creds.invalidated == 1
    assert "tok1" not in str(info.value) and "tok2" not in str(info.value)
    assert info.value.status == 401


def test_403_404_map_to_distinct_errors_with_detail() -> None:
    api, _, _, sleeps = make(problem(403, "not a member of team-b"), problem(404, "no such thing"))
    with pytest.raises(PermissionDeniedError, match="not a member of team-b") as denied:
        api.storage_sts("team-b-ws")
    assert "team-b-ws" in str(denied.value)
    with pytest.raises(NotFoundError, match="no such thing") as missing:
        api.storage_sts("nope")
    assert missing.value.detail == "no such thing"
    assert sleeps == []  # 4xx are never retried


def test_other_status_is_a_plain_api_error() -> None:
    api, _, _, _ = make(problem(409, "conflict"))
    with pytest.raises(ApiError, match="409"):
        api.workspaces()


def test_unreadable_response_is_an_api_error() -> None:
    api, _, _, _ = make((200, {"storage": "nonsense"}, {}))
    with pytest.raises(ApiError, match="cannot read"):
        api.storage_sts("x")


@pytest.mark.parametrize(
    ("verify", "verify_ssl", "ca"),
    [(True, True, None), (False, False, None), ("/etc/ca.pem", True, "/etc/ca.pem")],
)
def test_tls_settings(verify: bool | str, verify_ssl: bool, ca: str | None) -> None:
    api, _, _, _ = make(verify=verify)
    configuration = api._client().configuration
    assert configuration.verify_ssl is verify_ssl
    assert configuration.ssl_ca_cert == ca


def test_generated_client_is_not_imported_until_first_call() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from sts_bridge.terrapi.api import TerrapiApi; "
        "TerrapiApi('http://x', object()); print('terrapi_client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
