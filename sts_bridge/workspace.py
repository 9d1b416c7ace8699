"""``Workspace``: one S3 workspace with self-refreshing credentials.

It is the concrete side of the contract in ``docs/architecture.md``: the
:class:`~sts_bridge.s3.transfers.WorkspaceTransfers` mixin (upload, download,
list, delete, presign) relies only on the members defined here.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from sts_bridge.credentials.refreshing import RefreshingS3Credentials, S3Credentials
from sts_bridge.credentials.sources import workspace_by_reference
from sts_bridge.s3.keys import workspace_prefix
from sts_bridge.s3.transfers import WorkspaceTransfers
from sts_bridge.terrapi.storage_point import StoragePoint
from sts_bridge.urls import format_workspace_url

if TYPE_CHECKING:
    import boto3

    from sts_bridge.interop.filesystem import WorkspaceFileSystem

__all__ = ["Workspace"]


class Workspace(WorkspaceTransfers):
    """A storage workspace: where (bucket, prefix, endpoint) and with what (credentials).

    Build it with :meth:`sts_bridge.Client.workspace`. Thread-safe: one
    :class:`RefreshingS3Credentials` and one S3 client are shared by all
    threads; the credentials refresh themselves before they expire.

    :param storage_point: the workspace description.
    :param credentials: the refreshing credentials of this workspace.
    :param verify: TLS verification for S3: ``True``, ``False`` or a CA bundle path.
    :param max_pool_connections: HTTP connections of the S3 client.
    :param api_url: the TerrAPI URL the workspace came from (what a pickle
        carries to find it again; ``None`` when unknown).

    It pickles by reference (its name and ``api_url``, never credentials):
    unpickled, it is :func:`~sts_bridge.credentials.sources.resolve_workspace`
    of that name.
    """

    def __init__(
        self,
        storage_point: StoragePoint,
        credentials: RefreshingS3Credentials,
        *,
        verify: bool | str = True,
        max_pool_connections: int = 16,
        api_url: str | None = None,
    ) -> None:
        self.storage_point = storage_point
        self.api_url = api_url
        self.refreshing = credentials
        self._verify = verify
        self.max_pool_connections = max_pool_connections
        self._lock = threading.Lock()
        self._client: Any = None
        self._filesystem: WorkspaceFileSystem | None = None

    # -- where ---------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.storage_point.name

    @property
    def bucket(self) -> str:
        return self.storage_point.bucket

    @property
    def prefix(self) -> str:
        """The workspace prefix inside the bucket: ends with ``/`` or is empty."""
        return self.storage_point.prefix

    @property
    def endpoint_url(self) -> str:
        return self.storage_point.endpoint_url

    @property
    def region(self) -> str:
        return self.storage_point.region

    @property
    def addressing_style(self) -> str:
        """``path`` (S3-compatible servers) or ``virtual`` (AWS)."""
        return self.storage_point.addressing_style

    @property
    def verify(self) -> bool | str:
        return self._verify

    def url(self, key: str = "") -> str:
        """``workspace://<name>/<key>``: the URL fsspec, xarray, pandas... open.

        Raises :class:`~sts_bridge.errors.InvalidKeyError` for an unsafe key.
        """
        return format_workspace_url(self.name, key)

    def s3_url(self, key: str = "") -> str:
        """``s3://<bucket>/<prefix><key>`` (for tools given S3 credentials).

        Raises :class:`~sts_bridge.errors.InvalidKeyError` for an unsafe key.
        """
        if not key:
            return self.storage_point.url
        return f"s3://{self.bucket}/{workspace_prefix(self.prefix, key)}"

    def __reduce__(self) -> tuple[Any, ...]:
        # By reference: never the credentials, the session or the client.
        return (workspace_by_reference, (self.name, self.api_url))

    def __repr__(self) -> str:
        return (
            f"Workspace(name={self.name!r}, bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint_url={self.endpoint_url!r}, region={self.region!r})"
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (never credentials)."""
        return {
            "name": self.name,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "url": self.url(),
            "s3_url": self.s3_url(),
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "addressing_style": self.addressing_style,
            "platform_id": self.storage_point.platform_id,
            "scopes": list(self.storage_point.scopes),
        }

    # -- with what -------------------------------------------------------------

    def credentials(self) -> S3Credentials:
        """A valid frozen snapshot, refreshed when needed.

        Raises :class:`~sts_bridge.errors.CredentialsError` (or the API/auth
        error behind it) when none can be obtained.
        """
        return self.refreshing.get()

    def credentials_for(self, min_lifetime: float) -> S3Credentials:
        """Credentials living at least ``min_lifetime`` more seconds when possible.

        The platform caps STS lifetimes (15 minutes in production): when even
        new credentials live less, the current ones are kept as long as they
        have 90 % of their lifetime left (a new exchange would add less than
        10 %), else new ones are fetched. The caller clamps to ``remaining()``.
        See :meth:`RefreshingS3Credentials.lives_long_enough`.
        """
        return self.refreshing.credentials_for(min_lifetime)

    def credentials_refused(self, refused: S3Credentials) -> S3Credentials:
        """New credentials after the store rejected ``refused`` (see
        :meth:`RefreshingS3Credentials.replace_refused`); the S3 client made
        with the refused ones is dropped. Raises :class:`CredentialsError`."""
        new = self.refreshing.replace_refused(refused)
        with self._lock:
            self._client = None
        return new

    def s3_client(self) -> Any:
        """The workspace's botocore S3 client (shared, thread-safe, self-refreshing)."""
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                from sts_bridge.interop.boto import s3_client

                self._client = s3_client(
                    self.refreshing,
                    endpoint_url=self.endpoint_url,
                    region=self.region,
                    addressing_style=self.addressing_style,
                    verify=self.verify,
                    max_pool_connections=self.max_pool_connections,
                )
            return self._client

    def filesystem(self) -> WorkspaceFileSystem:
        """This workspace as an fsspec filesystem (``workspace://`` paths), made once.

        It uses this workspace's refreshing credentials for ``self.name``
        (other workspace names in paths resolve through the configuration
        chain). Needs the ``fsspec`` extra (``pip install 'sts-bridge[fsspec]'``).
        """
        with self._lock:
            if self._filesystem is None:
                from sts_bridge.interop.filesystem import WorkspaceFileSystem

                self._filesystem = WorkspaceFileSystem(self, skip_instance_cache=True)
            return self._filesystem

    def session(self) -> boto3.Session:
        """A new ``boto3.Session`` over the same refreshing credentials.

        Create clients from it with ``endpoint_url=ws.endpoint_url`` (and
        ``config=sts_bridge.interop.boto.s3_config(...)`` for the same addressing).
        """
        from sts_bridge.interop.boto import boto3_session

        return boto3_session(self.refreshing, region=self.region)
