"""pytest fixtures that start the local platform (registered as a pytest11 plugin).

Identity provider fixtures (session-scoped, self-contained):

* ``identity_provider``: one running :class:`IdentityProvider` with the
  default :class:`IdpConfig` (1 h access tokens, users alice and bob, clients
  ``sts-bridge-service``, ``sts-bridge-cli``, ``terrapi-api``).
* ``idp_factory``: ``idp_factory(**IdpConfig fields)`` starts another IdP
  (e.g. ``access_token_ttl=5`` or ``auto_approve=True``); all are stopped at
  the end of the session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .idp import IdentityProvider, IdpConfig


@pytest.fixture(scope="session")
def idp_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., IdentityProvider]]:
    started: list[IdentityProvider] = []

    def make(**fields: Any) -> IdentityProvider:
        idp = IdentityProvider(IdpConfig(**fields), workdir=tmp_path_factory.mktemp("idp"))
        started.append(idp)
        return idp.start()

    try:
        yield make
    finally:
        for idp in started:
            idp.stop()


@pytest.fixture(scope="session")
def identity_provider(idp_factory: Callable[..., IdentityProvider]) -> IdentityProvider:
    return idp_factory()
