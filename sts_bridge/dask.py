"""Share a workspace with the workers of a Dask cluster: :func:`share`.

>>> from distributed import Client as DaskClient                 # doctest: +SKIP
>>> ws = sts_bridge.Client.from_env().workspace("my-workspace")   # doctest: +SKIP
>>> with sts_bridge.dask.share(ws, DaskClient("tcp://scheduler:8786")):  # doctest: +SKIP
...     ds.to_zarr("workspace://my-workspace/out.zarr")

What a worker receives is one frozen :class:`~sts_bridge.credentials.refreshing.S3Credentials`
snapshot of the workspace (already scoped to its prefix by the platform)
plus where the workspace is (bucket, prefix, endpoint, region, addressing,
TLS verification); never the user's login: no client secret, no refresh
token, no access token of the identity provider.

How the snapshots travel (the worker never calls the TerrAPI API):

* :func:`share` registers a :class:`WorkspaceSharingPlugin` with the Dask
  client. The scheduler keeps it and hands it to every worker that joins
  later; on each worker it registers a :class:`SharedWorkspaceSource` through
  :func:`sts_bridge.credentials.sources.register_workspace_source`, so that
  ``workspace://<name>/...`` resolves to it in every task.
* A client-side thread wakes when the current snapshot is due
  (:func:`share_lead`: the advisory window of 15-minute credentials, half the
  lifetime of short ones), has the workspace fetch new credentials (on the
  client, with the user's login) and registers the plugin again under the
  same name with the new snapshot: the scheduler replaces the stored copy (future workers) and every
  current worker swaps the snapshot in place (the source object stays
  registered, so no task ever sees a gap).
* When the client goes away nobody refreshes: workers keep serving the last
  snapshot until it expires, then every resolution raises
  :class:`~sts_bridge.errors.SharedCredentialsExpiredError` before any
  request is made.
* :meth:`SharedWorkspaceHandle.close` removes the plugin from the scheduler
  and retires the source on every worker (it raises the same error until the
  workspace is shared again).

Why this design, and what a worker can do with what it holds:
``docs/many-machines.md``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from distributed.diagnostics.plugin import WorkerPlugin

from sts_bridge.clock import Clock, utc_now
from sts_bridge.credentials.refreshing import (
    DEFAULT_ADVISORY_WINDOW,
    DEFAULT_MANDATORY_WINDOW,
    S3Credentials,
    refresh_windows,
)
from sts_bridge.credentials.sources import WorkspaceSource, register_workspace_source
from sts_bridge.errors import SharedCredentialsExpiredError, StsBridgeError

if TYPE_CHECKING:
    from types import TracebackType

    import distributed

__all__ = [
    "SharedWorkspaceHandle",
    "SharedWorkspaceSource",
    "WorkspaceGrant",
    "WorkspaceSharingPlugin",
    "plugin_name",
    "share",
    "shared_workspaces",
]

logger = logging.getLogger("sts_bridge.dask")

#: A worker refuses a snapshot that lives less than this (seconds, capped at
#: a tenth of the lifetime): a request signed now must still reach S3 in time.
EXPIRY_MARGIN = 5.0
_MARGIN_FRACTION = 0.1
#: After a refresh that produced no new snapshot, try again this soon (seconds,
#: capped at a twentieth of the lifetime).
RETRY_DELAY = 5.0
_RETRY_FRACTION = 0.05
#: The refresher never sleeps less than this between two looks (seconds).
MIN_DELAY = 0.05
#: Short credentials are sent on when this fraction of their lifetime is left.
_LEAD_FRACTION = 0.5


class ShareableWorkspace(WorkspaceSource, Protocol):
    """What :func:`share` needs of a workspace (``sts_bridge.Workspace`` has it):
    a :class:`WorkspaceSource` that can also buy credentials living long enough."""

    def credentials_for(self, min_lifetime: float) -> S3Credentials: ...


@dataclass(frozen=True)
class WorkspaceGrant:
    """Everything a worker holds for one workspace: where it is and one snapshot.

    This is what crosses the wire (pickled by Dask); ``repr`` hides the
    secret key and the session token.
    """

    name: str
    bucket: str
    prefix: str
    endpoint_url: str
    region: str
    addressing_style: str
    verify: bool | str
    credentials: S3Credentials

    @classmethod
    def of(cls, workspace: ShareableWorkspace, credentials: S3Credentials) -> WorkspaceGrant:
        return cls(
            name=workspace.name,
            bucket=workspace.bucket,
            prefix=workspace.prefix,
            endpoint_url=workspace.endpoint_url,
            region=workspace.region,
            addressing_style=workspace.addressing_style,
            verify=workspace.verify,
            credentials=credentials,
        )


def usable_margin(credentials: S3Credentials) -> float:
    """Seconds of life below which a worker no longer signs with ``credentials``."""
    lifetime = credentials.lifetime
    if lifetime is None or lifetime <= 0:
        return EXPIRY_MARGIN
    return min(EXPIRY_MARGIN, lifetime * _MARGIN_FRACTION)


class SharedWorkspaceSource:
    """The worker side: a ``WorkspaceSource`` serving the snapshots the client pushes.

    It never refreshes anything itself (it has nothing to refresh with):
    :meth:`credentials` returns the newest snapshot while it is usable and
    raises :class:`~sts_bridge.errors.SharedCredentialsExpiredError` after.
    Thread-safe: :meth:`update` swaps one reference.
    """

    def __init__(self, grant: WorkspaceGrant, *, clock: Clock | None = None):
        self._grant = grant
        self._clock = clock or utc_now
        self._retired = False

    def __repr__(self) -> str:
        return (
            f"SharedWorkspaceSource(name={self.name!r}, bucket={self.bucket!r}, "
            f"prefix={self.prefix!r}, credentials={self._grant.credentials!r})"
        )

    @property
    def grant(self) -> WorkspaceGrant:
        return self._grant

    def update(self, grant: WorkspaceGrant) -> None:
        """Adopt a newer snapshot (an older one is ignored unless the source was retired)."""
        current = self._grant.credentials.expiry
        new = grant.credentials.expiry
        if not self._retired and current is not None and new is not None and new < current:
            return
        self._grant = grant
        self._retired = False

    def retire(self) -> None:
        """The client stopped sharing: refuse to hand out credentials from now on."""
        self._retired = True

    @property
    def name(self) -> str:
        return self._grant.name

    @property
    def bucket(self) -> str:
        return self._grant.bucket

    @property
    def prefix(self) -> str:
        return self._grant.prefix

    @property
    def endpoint_url(self) -> str:
        return self._grant.endpoint_url

    @property
    def region(self) -> str:
        return self._grant.region

    @property
    def addressing_style(self) -> str:
        return self._grant.addressing_style

    @property
    def verify(self) -> bool | str:
        return self._grant.verify

    def credentials(self) -> S3Credentials:
        """The newest snapshot the client shared, while it is still usable.

        Raises :class:`~sts_bridge.errors.SharedCredentialsExpiredError` when
        it lives less than :func:`usable_margin` seconds (the client stopped
        refreshing: it disconnected), or after the client closed the sharing.
        """
        if self._retired:
            raise SharedCredentialsExpiredError(
                f"the client stopped sharing workspace {self.name!r} with this worker",
                hint="call sts_bridge.dask.share() on the client again and resubmit the task",
            )
        creds = self._grant.credentials
        if creds.remaining(self._clock()) < usable_margin(creds):
            expiry = creds.expiry.isoformat() if creds.expiry else "?"
            raise SharedCredentialsExpiredError(
                f"the credentials shared by the client expired (workspace {self.name!r}, "
                f"at {expiry})",
                hint=(
                    "the Dask client that called sts_bridge.dask.share() stopped refreshing "
                    "them (it disconnected or closed the sharing); reconnect it, call share() "
                    "again and resubmit the task"
                ),
            )
        return creds


class _WorkerShares:
    """The sources of this worker process, by workspace name.

    A source object outlives its sharing: filesystems cache the source they
    resolved, so when a workspace is shared again the same object comes back
    to life (new grant, registered again) instead of a new one that those
    filesystems would never see.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, SharedWorkspaceSource] = {}
        self._unregister: dict[str, Callable[[], None]] = {}

    def adopt(self, grant: WorkspaceGrant) -> SharedWorkspaceSource:

        with self._lock:
            source = self._sources.get(grant.name)
            if source is None:
                source = self._sources[grant.name] = SharedWorkspaceSource(grant)
            else:
                source.update(grant)
            if grant.name not in self._unregister:
                self._unregister[grant.name] = register_workspace_source(source)
            return source

    def drop(self, name: str) -> bool:
        with self._lock:
            unregister = self._unregister.pop(name, None)
            source = self._sources.get(name)
            if source is not None:
                source.retire()
        if unregister is None:
            return False
        unregister()
        return True

    def get(self, name: str) -> SharedWorkspaceSource | None:
        with self._lock:
            return self._sources.get(name) if name in self._unregister else None

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._unregister)


_SHARES = _WorkerShares()


def shared_workspaces() -> list[str]:
    """Names of the workspaces shared with this (worker) process."""
    return _SHARES.names()


def shared_source(name: str) -> SharedWorkspaceSource | None:
    """The source shared with this process for workspace ``name``, if any."""
    return _SHARES.get(name)


def stop_sharing_here(name: str) -> bool:
    """Unregister the shared source of ``name`` in this process (run on workers)."""
    return _SHARES.drop(name)


def plugin_name(workspace: str) -> str:
    """The name under which the plugin of ``workspace`` is registered."""
    return f"sts-bridge-share:{workspace}"


class WorkspaceSharingPlugin(WorkerPlugin):  # type: ignore[misc]
    """Registers (or updates) the shared source of one workspace on each worker.

    Registered again with every new snapshot under the same name: the
    scheduler keeps the newest one for workers that join later. ``teardown``
    (called by Dask when the plugin is replaced) leaves the source in place;
    the source goes away with :meth:`SharedWorkspaceHandle.close`.
    """

    idempotent = False

    def __init__(self, grant: WorkspaceGrant) -> None:
        self.grant = grant

    def __repr__(self) -> str:
        return f"WorkspaceSharingPlugin(workspace={self.grant.name!r})"

    def setup(self, worker: Any) -> None:
        _SHARES.adopt(self.grant)


class SharedWorkspaceHandle:
    """The sharing of one workspace with one Dask client; ``close()`` stops it.

    Also a context manager. :attr:`pushes` counts the snapshots sent.
    """

    def __init__(self, workspace: ShareableWorkspace, client: distributed.Client) -> None:
        self.workspace = workspace
        self.client = client
        self.name = plugin_name(workspace.name)
        self.pushes = 0
        self._pushed: S3Credentials | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unregister_here: Callable[[], None] | None = None

    def __repr__(self) -> str:
        state = "closed" if self._stop.is_set() else "sharing"
        return f"SharedWorkspaceHandle(workspace={self.workspace.name!r}, {state})"

    def __enter__(self) -> SharedWorkspaceHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def last_pushed_access_key(self) -> str | None:
        """The access key id of the newest snapshot sent to the workers (not a secret)."""
        return self._pushed.access_key if self._pushed is not None else None

    @property
    def last_pushed_expiry(self) -> datetime | None:
        """When the newest snapshot sent to the workers expires."""
        return self._pushed.expiry if self._pushed is not None else None

    @property
    def sharing(self) -> bool:
        """Whether the refresher is still running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SharedWorkspaceHandle:
        """Push the first snapshot to every worker (blocking), then keep it fresh.

        Also registers the workspace itself in this process, so that the
        client's own ``workspace://`` calls (xarray writing metadata, reading
        results back) use the same workspace object as the one shared.
        """

        self._push(self.workspace.credentials())
        self._unregister_here = register_workspace_source(self.workspace)
        self._thread = threading.Thread(
            target=self._run, name=f"sts-bridge-share-{self.workspace.name}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop refreshing and remove the workspace from the scheduler and the workers.

        Idempotent. When the Dask client is already closed, or the scheduler
        cannot be reached, only the refresher stops (a warning is logged; the
        workers then keep the last snapshot until it expires).
        """
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        if self._unregister_here is not None:
            self._unregister_here()
            self._unregister_here = None
        if not _client_alive(self.client):
            return
        try:
            with contextlib.suppress(KeyError, ValueError):  # already removed
                self.client.unregister_worker_plugin(self.name)  # type: ignore[no-untyped-call]
            self.client.run(stop_sharing_here, self.workspace.name)
        except (OSError, TimeoutError) as exc:
            logger.warning(
                "could not withdraw workspace %r from the Dask workers (%s); they keep "
                "the last credentials until they expire",
                self.workspace.name,
                type(exc).__name__,
            )

    # -- the refresher -------------------------------------------------------

    def _push(self, credentials: S3Credentials) -> None:
        grant = WorkspaceGrant.of(self.workspace, credentials)
        self.client.register_plugin(WorkspaceSharingPlugin(grant), name=self.name)
        self._pushed = credentials
        self.pushes += 1
        logger.debug(
            "shared new credentials of workspace %r (expiry %s)",
            self.workspace.name,
            credentials.expiry.isoformat() if credentials.expiry else None,
        )

    def _fresh_snapshot(self, pushed: S3Credentials | None) -> S3Credentials:
        """New credentials when ``pushed`` is due (:func:`share_lead`), else ``pushed``."""
        if pushed is None or pushed.remaining() > share_lead(pushed):
            return self.workspace.credentials()
        # Ask for a whole new lifetime: the workspace's own advisory window may not
        # have opened yet (the sharing lead is longer for short credentials).
        lifetime = pushed.lifetime or DEFAULT_ADVISORY_WINDOW
        return self.workspace.credentials_for(lifetime)

    def _run(self) -> None:
        pushed = self._pushed
        delay = due_in(pushed) if pushed is not None else MIN_DELAY
        while not self._stop.wait(delay):
            if not _client_alive(self.client):
                logger.warning(
                    "the Dask client of the shared workspace %r closed; workers keep the "
                    "last credentials until they expire",
                    self.workspace.name,
                )
                return
            try:
                creds = self._fresh_snapshot(pushed)
            except StsBridgeError as exc:
                logger.warning(
                    "refreshing the shared credentials of workspace %r failed: %s",
                    self.workspace.name,
                    exc,
                )
                delay = retry_delay(pushed)
                continue
            if creds != pushed:
                try:
                    self._push(creds)
                except Exception as exc:  # scheduler gone, comm closed: try again soon
                    if _client_alive(self.client):
                        logger.warning(
                            "sending the new credentials of workspace %r to the workers failed: %s",
                            self.workspace.name,
                            type(exc).__name__,
                        )
                    delay = retry_delay(creds)
                    continue
                pushed = creds
            due = pushed.remaining() > share_lead(pushed)
            delay = due_in(pushed) if due else retry_delay(pushed)


def share_lead(credentials: S3Credentials) -> float:
    """Seconds before expiry at which the client sends the workers new credentials.

    The workspace's advisory window (120 s for 15-minute credentials), but at
    least half the lifetime (capped at that window) for short credentials:
    the new snapshot still has to travel through the scheduler to every
    worker, which on a busy machine takes longer than a third of 5 seconds.
    """
    lifetime = credentials.lifetime
    advisory, _ = refresh_windows(lifetime, DEFAULT_ADVISORY_WINDOW, DEFAULT_MANDATORY_WINDOW)
    if not lifetime or lifetime <= 0:
        return advisory
    return max(advisory, min(lifetime * _LEAD_FRACTION, DEFAULT_ADVISORY_WINDOW))


def due_in(credentials: S3Credentials) -> float:
    """Seconds until ``credentials`` are due for replacement on the workers."""
    return max(MIN_DELAY, credentials.remaining() - share_lead(credentials))


def retry_delay(credentials: S3Credentials | None) -> float:
    """How soon to try again after a refresh or a push that did not happen."""
    lifetime = credentials.lifetime if credentials is not None else None
    if not lifetime or lifetime <= 0:
        return RETRY_DELAY
    return max(MIN_DELAY, min(RETRY_DELAY, lifetime * _RETRY_FRACTION))


def _client_alive(client: distributed.Client) -> bool:
    return client.status not in ("closing", "closed")


def share(workspace: ShareableWorkspace, client: distributed.Client) -> SharedWorkspaceHandle:
    """Let every worker of ``client``, present and future, use ``workspace``.

    From the return on, tasks can open ``workspace://<name>/...`` URLs
    (through the sts-bridge fsspec filesystem) with credentials the client
    keeps fresh. The handle is a context manager; ``close()`` stops sharing.

    Raises :class:`~sts_bridge.errors.CredentialsError` (or the API/auth
    error behind it) when the first snapshot cannot be obtained; errors of
    the Dask client (e.g. ``OSError`` when the scheduler is unreachable)
    propagate.
    """
    return SharedWorkspaceHandle(workspace, client).start()
