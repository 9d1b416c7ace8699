"""``Workspace``: one S3 workspace with self-refreshing credentials.

Its data operations (upload, download, list, delete, presign) are defined
here and carried out by the :class:`~sts_bridge.s3.transfers.TransferEngine`
it owns, which knows the workspace only as a
:class:`~sts_bridge.s3.transfers.TransferTarget`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from sts_bridge.credentials.refreshing import RefreshingS3Credentials, S3Credentials
from sts_bridge.credentials.sources import workspace_by_reference
from sts_bridge.errors import StorageUnavailableError, StsBridgeError
from sts_bridge.s3.config import TransferConfig
from sts_bridge.s3.keys import workspace_prefix
from sts_bridge.s3.transfer_types import (
    ObjectInfo,
    PresignedUrl,
    ProgressCallback,
    UnfinishedUpload,
    UploadResult,
)
from sts_bridge.s3.transfers import SkipCallback, Source, TransferEngine
from sts_bridge.terrapi.storage_point import StoragePoint
from sts_bridge.urls import format_workspace_url

if TYPE_CHECKING:
    import boto3

    from sts_bridge.interop.filesystem import WorkspaceFileSystem

__all__ = ["Workspace"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


#: The result of uploading a directory (one per file).
UploadResults = list[UploadResult]
#: Multipart uploads left behind (:meth:`Workspace.unfinished_uploads`).
UnfinishedUploads = list[UnfinishedUpload]
#: Presigned URLs of :meth:`Workspace.presign_many`, in the order of the keys.
PresignedUrls = list[PresignedUrl]


class Workspace:
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
    :param cache_dir: the configured cache directory (the resume state of
        multipart uploads goes to its ``uploads/``, the hash caches of ``sync``
        to its ``sync/``; ``None``: the default one).
    :param transfer_config: every knob of uploads, downloads and sync
        (default: ``TransferConfig()``); see :meth:`with_transfer_config`.
    :param resolve_again: for a description read from a cache: drops that
        cache entry and returns the description the API gives now. Called
        once when the store cannot be reached; an operation that failed
        before sending anything is retried when the endpoint changed.

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
        cache_dir: Path | None = None,
        transfer_config: TransferConfig | None = None,
        resolve_again: Callable[[], StoragePoint] | None = None,
    ) -> None:
        self.storage_point = storage_point
        # The description came from a cache: when its endpoint cannot be
        # reached, this asks the API again once (see _endpoint_checked).
        self._resolve_again = resolve_again
        self.api_url = api_url
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.refreshing = credentials
        self._verify = verify
        self.max_pool_connections = max_pool_connections
        self._lock = threading.Lock()
        self._client: Any = None
        self._filesystem: WorkspaceFileSystem | None = None
        if transfer_config is not None and not isinstance(transfer_config, TransferConfig):
            from sts_bridge.errors import InvalidArgumentError

            raise InvalidArgumentError(
                f"transfer_config must be a TransferConfig, not {type(transfer_config).__name__}",
                hint="e.g. ws.with_transfer_config(TransferConfig(part_size=64 * 1024 * 1024))",
            )
        self.transfer_config = TransferConfig() if transfer_config is None else transfer_config
        self.engine = TransferEngine(
            self,
            self.transfer_config,
            state_dir=None if cache_dir is None else Path(cache_dir) / "uploads",
        )

    def with_transfer_config(self, config: TransferConfig) -> Workspace:
        """This workspace with other transfer knobs: same place, same refreshing credentials."""
        return Workspace(
            self.storage_point,
            self.refreshing,
            verify=self._verify,
            max_pool_connections=self.max_pool_connections,
            api_url=self.api_url,
            cache_dir=self.cache_dir,
            transfer_config=config,
            resolve_again=self._resolve_again,
        )

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

    # -- data operations (carried out by the engine) --------------------------

    def upload(
        self,
        source: Source,
        key: str | None = None,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
        resumable: bool = True,
    ) -> UploadResult:
        """Upload one file or one binary stream (or bytes); its :class:`UploadResult`.

        A directory goes through :meth:`upload_directory`. See
        :meth:`TransferEngine.upload <sts_bridge.s3.transfers.TransferEngine.upload>`
        for the keys, multipart and resume. Raises
        :class:`~sts_bridge.errors.InvalidKeyError` (before any request),
        :class:`~sts_bridge.errors.InvalidArgumentError` for bad metadata,
        :class:`~sts_bridge.errors.TransferError` (nothing left behind; also
        for a directory, before any request),
        :class:`~sts_bridge.errors.StorageAccessDeniedError`.
        """
        if hasattr(source, "read"):  # a stream cannot be read a second time
            return self.engine.upload(
                source,
                key,
                content_type=content_type,
                metadata=metadata,
                progress=progress,
                resumable=resumable,
            )
        return self._endpoint_checked(
            lambda: self.engine.upload(
                source,
                key,
                content_type=content_type,
                metadata=metadata,
                progress=progress,
                resumable=resumable,
            )
        )

    def upload_directory(
        self,
        path: str | os.PathLike[str],
        key: str | None = None,
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
        resumable: bool = True,
        on_skip: SkipCallback | None = None,
    ) -> UploadResults:
        """Upload a directory recursively; one :class:`UploadResult` per file.

        See :meth:`TransferEngine.upload_directory
        <sts_bridge.s3.transfers.TransferEngine.upload_directory>` for the
        keys and filters. Raises :class:`~sts_bridge.errors.InvalidKeyError`
        (before any request), ``ValueError`` for an invalid include/exclude
        pattern, :class:`~sts_bridge.errors.TransferError` (nothing left
        behind; also for a path that is not a directory, before any
        request), :class:`~sts_bridge.errors.StorageAccessDeniedError`.
        What is not a regular file (FIFO, socket, dangling link, link loop,
        link to a folder) fails the upload before any request, or, with
        ``on_skip``, is handed to ``on_skip(path, reason)`` and left out.
        """
        return self._endpoint_checked(
            lambda: self.engine.upload_directory(
                path,
                key,
                include=include,
                exclude=exclude,
                content_type=content_type,
                metadata=metadata,
                progress=progress,
                resumable=resumable,
                on_skip=on_skip,
            )
        )

    def unfinished_uploads(self, prefix: str = "") -> UnfinishedUploads:
        """Multipart uploads started on this machine and left behind, under ``prefix``.

        See :meth:`TransferEngine.unfinished_uploads
        <sts_bridge.s3.transfers.TransferEngine.unfinished_uploads>`; abort
        one with :meth:`abort_upload`.
        """
        return self.engine.unfinished_uploads(prefix)

    def abort_upload(self, upload: UnfinishedUpload) -> None:
        """Abort an upload of :meth:`unfinished_uploads`: its stored parts are deleted.

        Raises :class:`~sts_bridge.errors.TransferError` while another process
        runs it, a storage error when the store does not confirm it.
        """
        self.engine.abort_upload(upload)

    def upload_many(
        self,
        sources: Sequence[tuple[Source, str | None]],
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
        resumable: bool = True,
        on_skip: SkipCallback | None = None,
    ) -> UploadResults:
        """Upload several ``(source, key)`` pairs (files, directories, streams) in one go.

        Everything is planned before the first request: two sources that map
        to one key are refused (:class:`~sts_bridge.errors.InvalidArgumentError`:
        the second would overwrite the first), and ``include``/``exclude``
        apply to named files too. What is left out (filtered named files,
        what is not a regular file) goes to ``on_skip(path, reason)``; without
        it, the first one fails the upload before any request. See
        :meth:`TransferEngine.plan_uploads
        <sts_bridge.s3.transfers.TransferEngine.plan_uploads>`.
        """
        specs = self.engine.plan_uploads(
            sources,
            include=include,
            exclude=exclude,
            content_type=content_type,
            metadata=metadata,
            on_skip=on_skip,
        )
        if any(spec.stream is not None for spec in specs):  # a stream is read once
            return self.engine.upload_planned(specs, progress=progress, resumable=resumable)
        return self._endpoint_checked(
            lambda: self.engine.upload_planned(specs, progress=progress, resumable=resumable)
        )

    def download(
        self,
        key: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> Path:
        """Download ``key`` to ``dest`` (a file, or a directory to put it in); the path written.

        See :meth:`TransferEngine.download <sts_bridge.s3.transfers.TransferEngine.download>`.
        Raises :class:`~sts_bridge.errors.ObjectNotFoundError` when there is no such
        object, :class:`~sts_bridge.errors.TransferError` when the destination
        is a directory (before any request) or the transfer failed.
        """
        return self._endpoint_checked(lambda: self.engine.download(key, dest, progress=progress))

    def download_fileobj(
        self,
        key: str,
        fileobj: IO[bytes],
        *,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Write object ``key`` into the binary file object ``fileobj``, in order; the size.

        Raises :class:`~sts_bridge.errors.ObjectNotFoundError`,
        :class:`~sts_bridge.errors.TransferError`.
        """
        return self.engine.download_fileobj(key, fileobj, progress=progress)

    def list(
        self, prefix: str = "", *, recursive: bool = True, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        """Objects under relative ``prefix`` (S3 prefix semantics), page by page.

        With ``recursive=False`` only one level is listed and sub-folders come
        as ``ObjectInfo(is_prefix=True)``. Raises
        :class:`~sts_bridge.errors.InvalidKeyError` for an unsafe prefix and
        the storage errors of :mod:`sts_bridge.errors`.
        """
        listing = self.engine.list(prefix, recursive=recursive, page_size=page_size)
        if self._resolve_again is None:
            return listing
        return self._listing_checked(
            listing, lambda: self.engine.list(prefix, recursive=recursive, page_size=page_size)
        )

    def delete(self, key_or_prefix: str, *, recursive: bool = False) -> int:
        """Delete one object, or with ``recursive=True`` everything under a folder.

        Returns how many objects were deleted. See
        :meth:`TransferEngine.delete <sts_bridge.s3.transfers.TransferEngine.delete>`.
        Raises :class:`~sts_bridge.errors.ObjectNotFoundError` for a missing single
        key, :class:`~sts_bridge.errors.InvalidKeyError` (before any request).
        """
        return self._endpoint_checked(
            lambda: self.engine.delete(key_or_prefix, recursive=recursive)
        )

    def presign(
        self, key: str, method: str = "GET", expires_in: int | timedelta = 3600
    ) -> PresignedUrl:
        """A presigned URL for ``key`` (GET, PUT, HEAD or DELETE), at most 7 days.

        The URL cannot outlive the credentials that sign it: ``expires_in`` is
        clamped to what they have left, with a
        :class:`~sts_bridge.s3.transfers.PresignClampedWarning`. Raises
        ``ValueError`` (method, duration), :class:`~sts_bridge.errors.InvalidKeyError`,
        :class:`~sts_bridge.errors.CredentialsError`.
        """
        return self.engine.presign(key, method, expires_in, warn_stacklevel=4)

    def presign_many(
        self,
        keys: Iterable[str],
        method: str = "GET",
        expires_in: int | timedelta = 3600,
        *,
        on_clamp: Callable[[str], None] | None = None,
    ) -> PresignedUrls:
        """Presigned URLs for many keys at once (one signing key, one instant).

        ``on_clamp(message)`` is told that the lifetime was clamped instead of a
        :class:`~sts_bridge.s3.transfers.PresignClampedWarning` (for callers in
        many threads: catching warnings swaps process-wide state). Raises what
        :meth:`presign` raises.
        """
        return self.engine.presign_many(
            keys, method, expires_in, warn_stacklevel=4, on_clamp=on_clamp
        )

    # -- a cached description whose endpoint cannot be reached ------------------

    def _endpoint_checked(self, operation: Callable[[], _T]) -> _T:
        """``operation()``; when the store cannot be reached and this workspace's
        description came from a cache, the description is asked again and, if
        it changed, ``operation()`` runs once more against the new one.

        Only operations that can run twice use this (files, listings,
        deletes; never a stream, read once): a refused connection sends
        nothing, and an upload or download that fails cleans up after itself.
        """
        try:
            return operation()
        except StorageUnavailableError:
            if not self._described_again():
                raise
        return operation()

    def _listing_checked(
        self, listing: Iterator[ObjectInfo], again: Callable[[], Iterator[ObjectInfo]]
    ) -> Iterator[ObjectInfo]:
        """A listing retried like :meth:`_endpoint_checked` while nothing was yielded yet."""
        try:
            first = next(listing, None)
        except StorageUnavailableError:
            if not self._described_again():
                raise
            yield from again()
            return
        if first is not None:
            yield first
            yield from listing

    def _described_again(self) -> bool:
        """Ask the API for this workspace's description again (once); ``True``
        when the place changed (another endpoint, bucket or prefix)."""
        resolve, self._resolve_again = self._resolve_again, None
        if resolve is None:
            return False
        old = self.storage_point
        try:
            new = resolve()
        except StsBridgeError as exc:
            log.info("could not describe workspace %s again: %s", self.name, exc)
            return False
        where = ("endpoint_url", "bucket", "prefix", "region", "addressing_style")
        if all(getattr(new, f) == getattr(old, f) for f in where):
            return False
        log.info(
            "the cached description of %s named a store that cannot be reached; "
            "the API now names %s",
            self.name,
            new.endpoint_url,
        )
        with self._lock:
            self.storage_point = new
            client, self._client = self._client, None
            filesystem, self._filesystem = self._filesystem, None
        # Their connections go to the old endpoint: released now, not when collected.
        _close_client(client)
        if filesystem is not None:
            filesystem.close_connections()
        return True

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
        with the refused ones is closed. Raises :class:`CredentialsError`."""
        new = self.refreshing.replace_refused(refused)
        with self._lock:
            client, self._client = self._client, None
        # Released now, not when collected; a request still in flight on it
        # finishes, and its connection is closed when given back.
        _close_client(client)
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

    # -- lifetime --------------------------------------------------------------

    def close(self) -> None:
        """Release the workspace's connection pools (its S3 client's and its
        filesystem's object connections); a service drops a user's workspace so.

        Nothing else changes: the credentials stay (they belong to whoever
        made the workspace), and an operation after ``close()`` opens new
        connections. Transfers carry their own connections and close them
        when they end, unless the engine keeps them
        (:meth:`TransferEngine.reuse_connections`): those are closed too. Safe
        to call more than once, and from any thread; a
        request in flight on another thread finishes, its connection is closed
        when it is given back.
        """
        with self._lock:
            client, self._client = self._client, None
            filesystem, self._filesystem = self._filesystem, None
        if client is not None:
            client.close()
        if filesystem is not None:
            filesystem.close_connections()
        self.engine.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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


def _close_client(client: Any) -> None:
    """Close a replaced S3 client's connection pool (``None``: there was none)."""
    if client is not None:
        client.close()
