"""boto3 / botocore over :class:`~sts_bridge.credentials.refreshing.RefreshingS3Credentials`.

botocore refreshes credentials itself when they are a
``RefreshableCredentials``: before signing each request it checks two
windows (advisory, mandatory) and calls ``refresh_using()``. We give it a
:class:`DeferredRefreshableCredentials` (nothing is fetched until the first
request) whose ``refresh_using`` returns the metadata of
``RefreshingS3Credentials.get()``, attached to a botocore session through the
public credential-provider chain (``register_component('credential_provider',
...)``).

botocore's windows are class attributes sized for one-hour credentials
(15 / 10 minutes): with 15-minute STS credentials that would refresh on
every request. The subclass below sets them to 90 % of ours, so whenever
botocore decides to refresh, ``RefreshingS3Credentials`` agrees and
really refreshes (once, under its own lock), and botocore never sees
credentials it still considers stale. For very short credentials ours
scale with the lifetime, so botocore's follow after each refresh: that is
the one place touching botocore private attributes (:func:`set_refresh_windows`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import botocore.session
from botocore.config import Config
from botocore.credentials import (
    CredentialProvider,
    CredentialResolver,
    DeferredRefreshableCredentials,
)

from sts_bridge._redact import guard_library_loggers
from sts_bridge.config import trusted_cas
from sts_bridge.credentials.refreshing import (
    DEFAULT_ADVISORY_WINDOW,
    DEFAULT_MANDATORY_WINDOW,
    RefreshingS3Credentials,
)
from sts_bridge.errors import ConfigurationError

if TYPE_CHECKING:
    import boto3

__all__ = [
    "BOTOCORE_WINDOW_FRACTION",
    "DEFAULT_MAX_POOL_CONNECTIONS",
    "boto3_session",
    "botocore_credentials",
    "botocore_session",
    "s3_client",
    "s3_config",
    "set_refresh_windows",
]

METHOD = "sts-bridge"
#: Enough connections for parallel multipart transfers (s3transfer uses 10 threads).
DEFAULT_MAX_POOL_CONNECTIONS = 16
#: botocore's (and aiobotocore's) windows are this fraction of ours, so that our
#: check agrees with botocore's.
BOTOCORE_WINDOW_FRACTION = 0.9


class StsBridgeCredentials(DeferredRefreshableCredentials):  # type: ignore[misc]
    """botocore credentials fetched on first use and refreshed within our windows."""

    _advisory_refresh_timeout = DEFAULT_ADVISORY_WINDOW * BOTOCORE_WINDOW_FRACTION
    _mandatory_refresh_timeout = DEFAULT_MANDATORY_WINDOW * BOTOCORE_WINDOW_FRACTION


def set_refresh_windows(credentials: Any, advisory: float, mandatory: float) -> None:
    """Set botocore's (or aiobotocore's) refresh windows on one credentials object.

    PRIVATE botocore attributes (``RefreshableCredentials._advisory_refresh_timeout``
    and ``_mandatory_refresh_timeout``, read by ``refresh_needed``/``_refresh``;
    stable since botocore 1.x and also settable through the constructor's
    ``advisory_timeout``/``mandatory_timeout``). Kept in this one function,
    covered by ``tests/unit/test_interop_boto.py``.
    """
    credentials._advisory_refresh_timeout = advisory
    credentials._mandatory_refresh_timeout = mandatory


def botocore_credentials(refreshing: RefreshingS3Credentials) -> StsBridgeCredentials:
    """botocore credentials that refresh through ``refreshing`` (nothing fetched yet)."""
    holder: list[StsBridgeCredentials] = []

    def refresh_using() -> dict[str, Any]:
        creds = refreshing.get()
        advisory, mandatory = refreshing.windows_for(creds)
        if holder:
            set_refresh_windows(
                holder[0], advisory * BOTOCORE_WINDOW_FRACTION, mandatory * BOTOCORE_WINDOW_FRACTION
            )
        return creds.to_botocore_metadata()

    credentials = StsBridgeCredentials(refresh_using=refresh_using, method=METHOD)
    holder.append(credentials)
    advisory, mandatory = refreshing.windows_for(refreshing.current)
    set_refresh_windows(
        credentials, advisory * BOTOCORE_WINDOW_FRACTION, mandatory * BOTOCORE_WINDOW_FRACTION
    )
    return credentials


class _Provider(CredentialProvider):  # type: ignore[misc]
    METHOD = METHOD
    CANONICAL_NAME = "StsBridge"

    def __init__(self, credentials: Any) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Any:
        return self._credentials


_loader: Any = None
_loader_lock = threading.Lock()


def shared_data_loader() -> Any:
    """One botocore data loader for every session of this process (its cache is shared)."""
    global _loader
    with _loader_lock:
        if _loader is None:
            from botocore.loaders import create_loader

            _loader = create_loader()
        return _loader


def botocore_session(
    refreshing: RefreshingS3Credentials, *, region: str | None = None
) -> botocore.session.Session:
    """A botocore session whose only credential source is ``refreshing``."""
    session = botocore.session.Session()
    # Every session would otherwise parse the S3 service model again (several
    # MB each): a service holding hundreds of users' workspaces shares one.
    session.register_component("data_loader", shared_data_loader())
    session.register_component(
        "credential_provider", CredentialResolver([_Provider(botocore_credentials(refreshing))])
    )
    if region:
        session.set_config_variable("region", region)
    return session


def boto3_session(
    refreshing: RefreshingS3Credentials, *, region: str | None = None
) -> boto3.Session:
    """A ``boto3.Session`` over ``refreshing`` (use it for ``resource('s3')`` etc.).

    Raises :class:`~sts_bridge.errors.ConfigurationError` when boto3 is not
    installed (it is the ``boto3`` extra).
    """
    try:
        import boto3
    except ImportError as exc:
        raise ConfigurationError(
            "a boto3 session needs boto3, which is not installed",
            hint="pip install 'sts-bridge[boto3]', or use ws.s3_client() (botocore alone)",
        ) from exc
    return boto3.Session(
        botocore_session=botocore_session(refreshing, region=region), region_name=region
    )


def s3_config(
    *,
    region: str,
    addressing_style: str = "path",
    max_pool_connections: int = DEFAULT_MAX_POOL_CONNECTIONS,
    max_attempts: int = 4,
) -> Config:
    """The botocore ``Config`` for a workspace's S3 endpoint.

    Checksums only "when required": S3-compatible servers (radosgw, MinIO)
    reject or ignore the CRC32 trailers botocore >= 1.36 sends by default.
    """
    from sts_bridge.s3.config import stall_timeout

    s3_options: Any = {"addressing_style": addressing_style}
    stall = stall_timeout()
    return Config(
        connect_timeout=min(15.0, stall),
        read_timeout=stall,
        region_name=region,
        signature_version="s3v4",
        s3=s3_options,
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def s3_client(
    refreshing: RefreshingS3Credentials,
    *,
    endpoint_url: str,
    region: str,
    addressing_style: str = "path",
    verify: bool | str = True,
    max_pool_connections: int = DEFAULT_MAX_POOL_CONNECTIONS,
    session: botocore.session.Session | None = None,
) -> Any:
    """An S3 client whose credentials refresh themselves (thread-safe).

    Made through ``boto3.Session`` where boto3 is installed, so that it has
    boto3's transfer methods (``upload_file``, ``download_file``, ``copy``)
    as users expect; otherwise botocore's own client, with every S3 API call
    and without those three. boto3 is an extra because its botocore pin
    moves ahead of the one aiobotocore (under s3fs) allows, and pip's
    resolver then fails to install sts-bridge beside s3fs.
    """
    session = session or botocore_session(refreshing, region=region)
    try:
        import boto3
    except ImportError:
        create: Any = session.create_client
    else:
        create = boto3.Session(botocore_session=session, region_name=region).client
    client = create(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        verify=trusted_cas(verify),  # the one CA rule, not certifi's
        config=s3_config(
            region=region,
            addressing_style=addressing_style,
            max_pool_connections=max_pool_connections,
        ),
    )
    # botocore's DEBUG records carry the signed headers (session token, key
    # id): redact them, now that every botocore module has its logger.
    guard_library_loggers()
    return client
