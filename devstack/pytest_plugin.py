"""pytest fixtures that start the local platform (registered as a pytest11 plugin).

Identity provider fixtures (session-scoped, self-contained):

* ``identity_provider``: one running :class:`IdentityProvider` with the
  default :class:`IdpConfig` (1 h access tokens, users alice and bob, clients
  ``sts-bridge-service``, ``sts-bridge-cli``, ``terrapi-api``).
* ``idp_factory``: ``idp_factory(**IdpConfig fields)`` starts another IdP
  (e.g. ``access_token_ttl=5`` or ``auto_approve=True``); all are stopped at
  the end of the session.

Platform fixtures (IdP + reference TerrAPI + radosgw, free ports, nothing
shared between sessions):

* ``local_platform`` (session): a :class:`LocalPlatform` with production-like
  defaults (1 h access tokens, 900 s STS credentials).
* ``short_lived_platform`` (session): access tokens of
  :data:`SHORT_TOKEN_TTL` s and STS credentials of :data:`SHORT_STS_DURATION` s.
* ``platform_factory`` (session): ``platform_factory(**LocalPlatform options)``.
* ``platform_env`` (function): sets the ``TERRAPI_*`` block of
  ``local_platform`` (service client) plus ``STS_BRIDGE_CACHE_DIR`` (a tmp
  dir) with monkeypatch and returns it; ``short_lived_platform_env`` likewise.

They skip with a clear message when the Ceph binaries (or node) are missing,
except under CI (the ``CI`` environment variable set): there they fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .idp import IdentityProvider, IdpConfig

if TYPE_CHECKING:
    from .platform import LocalPlatform


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


# ---------------------------------------------------------------- the platform
#: access token lifetime of ``short_lived_platform`` (seconds)
SHORT_TOKEN_TTL = 5
#: STS credentials lifetime of ``short_lived_platform`` (seconds). radosgw is
#: configured to accept 1 s (``s3.MIN_STS_DURATION``), but credentials that die
#: before the first request are useless; 5 s is the shortest practical value.
SHORT_STS_DURATION = 5


def _platform_prerequisites() -> list[str]:
    import shutil

    from .idp import NODE_DIR
    from .s3 import missing_binaries

    missing = missing_binaries()
    if shutil.which("node") is None:
        missing.append("node")
    elif not (NODE_DIR / "node_modules" / "oidc-provider").is_dir():
        missing.append("devstack/node/node_modules (npm ci)")
    return missing


def require_platform() -> None:
    """Skip (or, under CI, fail) when the local platform cannot run here."""
    import os

    missing = _platform_prerequisites()
    if not missing:
        return
    message = (
        f"the local platform cannot run: missing {', '.join(missing)}; run `make setup` "
        "(devstack/install-system-deps.sh installs the Ceph packages)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{message} [CI is set: not skipping]", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def platform_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LocalPlatform]]:
    """``platform_factory(**options)`` starts a :class:`LocalPlatform`; every
    platform started is stopped at the end of the session."""
    from .platform import LocalPlatform

    started: list[LocalPlatform] = []

    def make(**options: Any) -> LocalPlatform:
        require_platform()
        options.setdefault("workdir", tmp_path_factory.mktemp("platform"))
        platform = LocalPlatform(**options)
        started.append(platform)
        return platform.start()

    try:
        yield make
    finally:
        for platform in started:
            platform.stop()


@pytest.fixture(scope="session")
def local_platform(platform_factory: Callable[..., LocalPlatform]) -> LocalPlatform:
    """The platform with production-like lifetimes (tokens 1 h, STS 900 s)."""
    return platform_factory()


@pytest.fixture(scope="session")
def short_lived_platform(platform_factory: Callable[..., LocalPlatform]) -> LocalPlatform:
    """Access tokens of 5 s and STS credentials of 5 s (expiry and refresh tests)."""
    return platform_factory(token_ttl=SHORT_TOKEN_TTL, sts_duration=SHORT_STS_DURATION, leeway=0)


def _apply_env(
    platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch, cache_dir: Any
) -> dict[str, str]:
    import os

    for name in list(os.environ):
        if name.startswith(("TERRAPI_", "STS_BRIDGE_")):
            monkeypatch.delenv(name, raising=False)
    env = platform.env()
    env["STS_BRIDGE_CACHE_DIR"] = str(cache_dir)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def platform_env(
    local_platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> dict[str, str]:
    """``local_platform``'s TERRAPI_* block + STS_BRIDGE_CACHE_DIR (tmp), set in
    os.environ for this test (other TERRAPI_* / STS_BRIDGE_* variables removed)."""
    return _apply_env(local_platform, monkeypatch, tmp_path / "sts-bridge-cache")


@pytest.fixture
def short_lived_platform_env(
    short_lived_platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> dict[str, str]:
    """Like ``platform_env`` for ``short_lived_platform``."""
    return _apply_env(short_lived_platform, monkeypatch, tmp_path / "sts-bridge-cache")
