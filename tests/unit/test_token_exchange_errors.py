"""Which failures of a token exchange are the caller's (401) and which the service's.

The identity provider is faked at the OAuth client's boundary (its
``request_token``); the real exchange against the local IdP is tested in
tests/integration/test_service_users.py and test_results_service.py.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from sts_bridge.auth.exchange import TokenExchange
from sts_bridge.auth.oauth import map_oauth_error
from sts_bridge.errors import (
    AuthError,
    CallerRefusedError,
    InvalidClientError,
    ProviderUnreachableError,
)

NOW = datetime(2026, 12, 6, tzinfo=timezone.utc)
SUBJECT_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


class ScriptedOAuth:
    """An OAuth client whose token endpoint answers with ``failure``."""

    client_id = "service"
    audience = "https://api.example"
    audience_param = "resource"

    def __init__(self, failure: BaseException) -> None:
        self.failure = failure

    def request_token(self, grant_type: str, *, now: datetime, **params: Any) -> Any:
        raise self.failure


def exchanging(failure: BaseException) -> BaseException:
    exchange = TokenExchange(ScriptedOAuth(failure))  # type: ignore[arg-type]
    with pytest.raises(AuthError) as info:
        exchange.exchange(SUBJECT_TOKEN, now=NOW)
    return info.value


def test_invalid_grant_refuses_the_caller_with_the_issuers_reason() -> None:
    refused = exchanging(
        map_oauth_error("invalid_grant", "the subject token is revoked\nsecond line", "exchange")
    )
    assert isinstance(refused, CallerRefusedError)
    assert refused.status == 401 and refused.error == "invalid_token"
    assert refused.message == (
        "the identity provider refused to exchange the caller's token: the subject token is revoked"
    )
    assert refused.www_authenticate().startswith('Bearer error="invalid_token"')
    assert SUBJECT_TOKEN not in str(refused)


def test_invalid_grant_without_a_description() -> None:
    refused = exchanging(map_oauth_error("invalid_grant", None, "exchange"))
    assert isinstance(refused, CallerRefusedError)
    assert refused.message.endswith(": invalid_grant")


@pytest.mark.parametrize(
    "failure",
    [
        map_oauth_error("invalid_client", "this client may not exchange", "exchange"),
        map_oauth_error("invalid_target", None, "exchange"),
        map_oauth_error("server_error", None, "exchange"),
        ProviderUnreachableError("the identity provider did not answer"),
    ],
    ids=["client refused", "audience refused", "issuer broken", "issuer unreachable"],
)
def test_the_services_own_problems_stay_server_errors(failure: AuthError) -> None:
    raised = exchanging(failure)
    assert raised is failure
    assert not isinstance(raised, CallerRefusedError)
    if getattr(failure, "oauth_error", None) == "invalid_client":
        assert isinstance(raised, InvalidClientError)
