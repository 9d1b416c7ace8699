"""pytest fixtures that start the local platform (registered as a pytest11 plugin).

Identity provider fixtures (session-scoped, self-contained):

* ``identity_provider``: one running :class:`IdentityProvider` with the
  default :class:`IdpConfig` (1 h access tokens, users alice, bob and carol, clients
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

They skip with a clear message when node is missing, except under CI (the
``CI`` environment variable set): there they fail.

S3 backend of the platform fixtures (:func:`fixture_s3_backend`): under CI
ALWAYS radosgw (missing Ceph binaries, or ``STS_BRIDGE_DEVSTACK_S3=moto``,
fail the tests: CI never runs silently on the fallback). Elsewhere
``STS_BRIDGE_DEVSTACK_S3`` if set, else radosgw when the Ceph binaries exist,
else the moto fallback (the session header says so, and the platform prints
what it loses). A test that needs what moto lacks carries
``@pytest.mark.requires_radosgw("why")``: skipped with that reason when the
fixtures run on moto. ``platform.s3_backend`` tells a test which one it got.
A test may still start ``LocalPlatform(s3_backend="moto")`` itself (the
fallback's own tests do, in CI too).
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


def _in_ci() -> bool:
    import os

    return bool(os.environ.get("CI"))


def fixture_s3_backend() -> tuple[str | None, str]:
    """``(backend, problem)``: the S3 backend the platform fixtures use
    (``radosgw``/``moto``), or ``None`` and why none can run here."""
    import os

    from .platform import S3_BACKEND_ENV, PlatformError, resolve_s3_backend
    from .s3 import missing_binaries

    if _in_ci():
        if (os.environ.get(S3_BACKEND_ENV) or "").strip().lower() == "moto":
            return None, (
                f"{S3_BACKEND_ENV}=moto under CI: CI runs the tests on radosgw, never on "
                "the moto fallback"
            )
        missing = missing_binaries()
        if missing:
            return None, f"missing {', '.join(missing)} (CI requires radosgw)"
        return "radosgw", ""
    try:
        return resolve_s3_backend(), ""
    except PlatformError as exc:
        return None, str(exc)


def require_platform(s3_backend: str | None = None) -> None:
    """Skip (or, under CI, fail) when the local platform cannot run here.

    ``s3_backend``: the backend the caller will ask for explicitly (``moto``
    then only needs moto installed, under CI too); ``None``: the fixtures'
    choice (:func:`fixture_s3_backend`)."""
    missing = _platform_prerequisites()
    if s3_backend == "moto":
        from .s3_moto import moto_available

        missing = [m for m in missing if m in ("node",) or "node_modules" in m]
        if not moto_available():
            missing.append("moto (pip install 'moto[server]')")
    elif s3_backend == "radosgw":
        pass
    else:
        backend, problem = fixture_s3_backend()
        if backend is None:
            missing = [m for m in missing if m == "node" or "node_modules" in m] + [problem]
        elif backend == "moto":
            missing = [m for m in missing if m == "node" or "node_modules" in m]
    if not missing:
        return
    message = (
        f"the local platform cannot run: {'; '.join(missing)}; run `make setup` "
        "(devstack/install-system-deps.sh installs the Ceph packages)"
    )
    if _in_ci():
        pytest.fail(f"{message} [CI is set: not skipping]", pytrace=False)
    pytest.skip(message)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires_radosgw(reason): needs what the moto S3 fallback lacks (credential "
        "expiry, presigned URLs, session policies / conditions); skipped when the "
        "platform fixtures run on moto",
    )


def pytest_report_header(config: pytest.Config) -> str:
    backend, problem = fixture_s3_backend()
    if backend == "moto":
        return (
            "sts-bridge devstack S3 backend: moto FALLBACK (no expiry, no presigned URLs, "
            "no session policies; tests marked requires_radosgw are skipped)"
        )
    return f"sts-bridge devstack S3 backend: {backend or 'none: ' + problem}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("requires_radosgw")
    if marker is None:
        return
    backend, _ = fixture_s3_backend()
    if backend == "moto":
        why = marker.args[0] if marker.args else marker.kwargs.get("reason", "")
        pytest.skip(
            f"needs radosgw{f' ({why})' if why else ''}: the platform runs on the moto "
            "fallback here (install Ceph with `make setup` to run it)"
        )


@pytest.fixture(scope="session")
def platform_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LocalPlatform]]:
    """``platform_factory(**options)`` starts a :class:`LocalPlatform`; every
    platform started is stopped at the end of the session."""
    from .platform import LocalPlatform

    started: list[LocalPlatform] = []

    def make(**options: Any) -> LocalPlatform:
        require_platform(options.get("s3_backend"))
        if "s3_backend" not in options:
            options["s3_backend"] = fixture_s3_backend()[0]
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
