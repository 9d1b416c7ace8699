"""The local IdP's RFC 8693 token-exchange grant (oidc-provider custom grant).

The results service's client exchanges a user's token addressed to it for an
API token of the same subject; everyone and everything else is refused.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests
from sts_bridge_devstack.idp import (
    DEFAULT_AUDIENCE,
    EXCHANGE_AUDIENCE,
    TOKEN_EXCHANGE_GRANT,
    IdentityProvider,
)

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def exchange(
    idp: IdentityProvider, subject_token: str, *, client: str = "exchange", **extra: str
) -> requests.Response:
    auth = (
        (idp.exchange_client_id, idp.exchange_client_secret)
        if client == "exchange"
        else (idp.service_client_id, idp.service_client_secret)
    )
    return requests.post(
        idp.token_endpoint,
        data={
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            **extra,
        },
        auth=auth,  # type: ignore[arg-type]
        timeout=10,
    )


@pytest.fixture(scope="module")
def alice_for_the_service(identity_provider: IdentityProvider) -> str:
    return identity_provider.user_token("alice", resource=EXCHANGE_AUDIENCE)


def test_discovery_offers_the_grant(identity_provider: IdentityProvider) -> None:
    metadata = requests.get(identity_provider.discovery_url, timeout=5).json()
    assert TOKEN_EXCHANGE_GRANT in metadata["grant_types_supported"]


def test_a_users_token_for_the_service_becomes_an_api_token(
    identity_provider: IdentityProvider, alice_for_the_service: str
) -> None:
    presented = claims(alice_for_the_service)
    assert presented["aud"] == EXCHANGE_AUDIENCE
    answer = exchange(
        identity_provider,
        alice_for_the_service,
        resource=DEFAULT_AUDIENCE,
        scope="gep email unknown-scope",
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    got = claims(body["access_token"])
    assert got["sub"] == presented["sub"] == identity_provider.users["alice"].sub
    assert got["aud"] == DEFAULT_AUDIENCE
    assert got["preferred_username"] == "alice" and got["groups"] == ["team-a"]
    assert got["act"] == {"sub": identity_provider.exchange_client_id}
    # narrowed: asked gep email unknown-scope, the presented token holds gep and email
    assert body["scope"] == got["scope"] == "gep email"


def test_without_scope_the_presented_scopes_carry_over(
    identity_provider: IdentityProvider, alice_for_the_service: str
) -> None:
    answer = exchange(identity_provider, alice_for_the_service)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["scope"].split()) == set(
        claims(alice_for_the_service)["scope"].split()
    )


def test_refusals(identity_provider: IdentityProvider, alice_for_the_service: str) -> None:
    idp = identity_provider

    def refused(answer: requests.Response) -> str:
        assert answer.status_code in (400, 401), answer.text
        return str(answer.json()["error"])

    # a client without the exchange permission
    assert refused(exchange(idp, alice_for_the_service, client="service")) in (
        "unauthorized_client",
        "invalid_request",
    )
    # a token addressed to the API, not to the exchanging service
    assert refused(exchange(idp, idp.user_token("alice"))) == "invalid_grant"
    # not a token at all / a forged one
    assert refused(exchange(idp, "not-a-token")) == "invalid_grant"
    header, _, signature = alice_for_the_service.split(".")
    bob = base64.urlsafe_b64encode(
        json.dumps({**claims(alice_for_the_service), "sub": idp.users["bob"].sub}).encode()
    )
    forged = f"{header}.{bob.rstrip(b'=').decode()}.{signature}"
    assert refused(exchange(idp, forged)) == "invalid_grant"
    # another target than the API
    assert refused(exchange(idp, alice_for_the_service, resource="urn:elsewhere")) == (
        "invalid_target"
    )
    # only access tokens in and out
    wrong_type = exchange(
        idp, alice_for_the_service, subject_token_type="urn:ietf:params:oauth:token-type:id_token"
    )
    assert refused(wrong_type) == "invalid_request"
