"""aiobotocore (s3fs) over a workspace's refreshing credentials.

The session's only credential provider hands aiobotocore an
``AioDeferredRefreshableCredentials`` whose refresh callback asks the
:class:`~sts_bridge.credentials.sources.WorkspaceSource` for a snapshot.
For a :class:`~sts_bridge.Workspace` that is its
``RefreshingS3Credentials``, shared with boto3 clients, transfers and every
other filesystem of the process: one STS exchange at a time, whether the
caller is a thread or a coroutine. The callback runs in a worker thread
(``asyncio.to_thread``) so that an exchange never blocks the event loop.

aiobotocore refreshes when its own windows say so; they are set (through
:func:`sts_bridge.interop.boto.set_refresh_windows`, as for boto3) to 90 % of
ours, so whenever aiobotocore asks, the source really has new credentials
to give, and 5-second test credentials are not fetched on every request.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiobotocore.credentials import AioCredentialResolver, AioDeferredRefreshableCredentials
from aiobotocore.session import AioSession
from botocore.credentials import CredentialProvider

from sts_bridge.credentials.refreshing import (
    DEFAULT_ADVISORY_WINDOW,
    DEFAULT_MANDATORY_WINDOW,
    refresh_windows,
)
from sts_bridge.interop.boto import BOTOCORE_WINDOW_FRACTION, set_refresh_windows

if TYPE_CHECKING:
    from sts_bridge.credentials.refreshing import S3Credentials
    from sts_bridge.credentials.sources import WorkspaceSource

__all__ = ["aio_credentials", "refreshing_session"]

METHOD = "sts-bridge"


def _windows(creds: S3Credentials) -> tuple[float, float]:
    """aiobotocore's (advisory, mandatory) windows after obtaining ``creds``.

    90 % of the SDK's windows, and never more than 90 % of what ``creds``
    have left: a source with narrower windows of its own hands back the
    same snapshot when asked early, and is then asked again only as the
    remaining time shrinks, not on every request.
    """
    advisory, mandatory = refresh_windows(
        creds.lifetime, DEFAULT_ADVISORY_WINDOW, DEFAULT_MANDATORY_WINDOW
    )
    left = max(creds.remaining(), 0.0) * BOTOCORE_WINDOW_FRACTION
    advisory = min(advisory * BOTOCORE_WINDOW_FRACTION, left)
    mandatory = min(mandatory * BOTOCORE_WINDOW_FRACTION, advisory)
    return advisory, mandatory


def aio_credentials(source: WorkspaceSource) -> AioDeferredRefreshableCredentials:
    """aiobotocore credentials that refresh from ``source`` (nothing fetched yet)."""
    holder: list[AioDeferredRefreshableCredentials] = []

    async def refresh_using() -> dict[str, Any]:
        creds = await asyncio.to_thread(source.credentials)
        set_refresh_windows(holder[0], *_windows(creds))
        return creds.to_botocore_metadata()

    credentials = AioDeferredRefreshableCredentials(refresh_using=refresh_using, method=METHOD)
    holder.append(credentials)
    return credentials


class _Provider(CredentialProvider):  # type: ignore[misc]  # aiobotocore awaits load()
    METHOD = METHOD
    CANONICAL_NAME = "StsBridge"

    def __init__(self, credentials: AioDeferredRefreshableCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    async def load(self) -> AioDeferredRefreshableCredentials:
        return self._credentials


def refreshing_session(source: WorkspaceSource) -> AioSession:
    """An ``AioSession`` whose only credential source is ``source`` (for ``s3fs``)."""
    session = AioSession()
    session.register_component(
        "credential_provider", AioCredentialResolver([_Provider(aio_credentials(source))])
    )
    session.set_config_variable("region", source.region)
    return session
