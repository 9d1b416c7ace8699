"""``Client``: settings + token credentials + API -> workspaces.

>>> from sts_bridge import Client
>>> ws = Client.from_env().workspace()          # doctest: +SKIP
>>> ws.upload("result.tif")                      # doctest: +SKIP

Workspace resolution: the name given, else ``TERRAPI_WORKSPACE``, else
``<platform>-<username>-private-workspace`` among the principal's
workspaces (username from the token's ``preferred_username`` or the user
info), else the principal's only workspace.

With ``cache=True`` (default) the STS credentials *and* the workspace
description are kept in ``<cache_dir>/sts/`` (see
:mod:`sts_bridge.credentials.cache`), so a warm run of a named workspace
contacts neither the identity provider nor the API.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from typing import TYPE_CHECKING, Any

from sts_bridge._files import atomic_write, read_private_json
from sts_bridge.clock import Clock, utc_now
from sts_bridge.config import Settings, load_settings, require
from sts_bridge.credentials.cache import CredentialCache
from sts_bridge.credentials.refreshing import (
    DEFAULT_ADVISORY_WINDOW,
    DEFAULT_MANDATORY_WINDOW,
    RefreshingS3Credentials,
    S3Credentials,
    StsFetcher,
)
from sts_bridge.errors import (
    InvalidArgumentError,
    NotFoundError,
    WorkspaceError,
    WorkspaceNotFoundError,
)
from sts_bridge.terrapi.storage_point import StoragePoint
from sts_bridge.workspace import Workspace

if TYPE_CHECKING:
    from sts_bridge.auth import TokenCredentials
    from sts_bridge.s3.config import TransferConfig
    from sts_bridge.s3.transfers import Source, UploadResult
    from sts_bridge.terrapi.api import TerrapiApi

__all__ = ["Client"]

logger = logging.getLogger("sts_bridge.client")

_PRIVATE_SUFFIX = "-private-workspace"


class Client:
    """Entry point of the SDK: discovers workspaces and hands out :class:`Workspace` objects.

    :param settings: resolved :class:`~sts_bridge.config.Settings` (default: ``load_settings()``).
    :param credentials: a :class:`~sts_bridge.auth.TokenCredentials` (default:
        ``credentials_from_settings(settings, interactive=...)``).
    :param api: a :class:`~sts_bridge.terrapi.api.TerrapiApi` (default: built from the settings).
    :param cache: share STS credentials between processes through ``settings.cache_dir``.
    :param interactive: allow a browser/device login when no token is available.
    :param advisory_window: / :param mandatory_window: STS refresh windows (seconds).
    :param clock: tz-aware "now" for the credentials (tests).
    :param transfer_config: the transfer knobs of every workspace it builds
        (default: ``TransferConfig()``).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        credentials: TokenCredentials | None = None,
        api: TerrapiApi | None = None,
        cache: bool = True,
        interactive: bool = False,
        advisory_window: float = DEFAULT_ADVISORY_WINDOW,
        mandatory_window: float = DEFAULT_MANDATORY_WINDOW,
        clock: Clock | None = None,
        transfer_config: TransferConfig | None = None,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.transfer_config = transfer_config
        self._credentials = credentials
        self._api = api
        self._owns_api = api is None  # a given API (a service's shared pool) is not ours to close
        self.cache = cache
        self.interactive = interactive
        self.advisory_window = advisory_window
        self.mandatory_window = mandatory_window
        self._clock = clock
        self._lock = threading.RLock()
        self._workspaces: dict[str, Workspace] = {}

    @classmethod
    def from_env(cls, **overrides: Any) -> Client:
        """A client from the configuration chain; ``overrides`` are :class:`Settings` fields."""
        return cls(load_settings(**overrides))

    def __repr__(self) -> str:
        return f"Client(api_url={self.settings.api_url!r}, workspace={self.settings.workspace!r})"

    # -- lazily built parts ------------------------------------------------------

    @property
    def credentials(self) -> TokenCredentials:
        """The access-token source (built on first use; no network call here)."""
        with self._lock:
            if self._credentials is None:
                from sts_bridge.auth import credentials_from_settings

                self._credentials = credentials_from_settings(
                    self.settings, interactive=self.interactive
                )
            return self._credentials

    @property
    def api(self) -> TerrapiApi:
        """The TerrAPI client (built on first use)."""
        with self._lock:
            if self._api is None:
                from sts_bridge.terrapi.api import TerrapiApi

                require(self.settings, "api_url")
                assert self.settings.api_url is not None
                self._api = TerrapiApi(
                    self.settings.api_url, self.credentials, verify=self.settings.verify
                )
            return self._api

    @property
    def api_url(self) -> str:
        if self._api is not None:
            return self._api.api_url
        require(self.settings, "api_url")
        assert self.settings.api_url is not None
        return self.settings.api_url.rstrip("/")

    # -- discovery ---------------------------------------------------------------

    def user_info(self) -> Any:
        """The API's ``PrincipalContext`` for the current token."""
        return self.api.user_info()

    def workspaces(self) -> list[str]:
        """Names of the workspaces this principal may use (sorted)."""
        return self.api.workspace_names()

    def default_workspace_name(self) -> str:
        """The workspace used when none is named (see the module docstring)."""
        if self.settings.workspace:
            return self.settings.workspace
        subject = self._subject()
        remembered = self._remembered_default(subject)
        if remembered:
            return remembered
        names = self.workspaces()
        name = choose_default_workspace(
            names,
            usernames=self._usernames(),
            platforms=self._platform_hints(),
        )
        self._remember_default(subject, name)
        return name

    def workspace(self, name: str | None = None) -> Workspace:
        """The :class:`Workspace` ``name`` (default: :meth:`default_workspace_name`).

        Raises :class:`WorkspaceNotFoundError` (with the available names and a
        suggestion), :class:`~sts_bridge.errors.PermissionDeniedError`,
        :class:`WorkspaceError` (not S3) or an auth/API error.
        """
        if name is not None and not isinstance(name, str):
            raise InvalidArgumentError(
                f"a workspace name is a string, not {type(name).__name__} {name!r}"[:160],
                hint="e.g. client.workspace('gep-alice-private-workspace'); "
                "client.workspaces() lists them",
            )
        name = name or self.default_workspace_name()
        with self._lock:
            ws = self._workspaces.get(name)
            if ws is None:
                ws = self._open(name)
                self._workspaces[name] = ws
            return ws

    # -- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        """Close the workspaces this client handed out (:meth:`Workspace.close`) and
        its API connection pool, unless the API was given to it (a service's
        shared pool stays open). Safe to call more than once; used again, the
        client connects anew."""
        with self._lock:
            workspaces = list(self._workspaces.values())
            self._workspaces.clear()
            api = self._api if self._owns_api else None
        for ws in workspaces:
            ws.close()
        if api is not None:
            api.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------

    def _open(self, name: str) -> Workspace:
        store = self._store(name)
        sts = _LazyStsFetcher(self, name)

        def fetch() -> S3Credentials:
            creds = sts()
            if store is not None and sts.storage_point is not None:
                store.storage_point = sts.storage_point
            return creds

        point: StoragePoint | None = None
        initial: S3Credentials | None = None
        cached = False
        if store is not None:
            point, initial = store.load_entry()
            cached = point is not None
            if point is None:
                with store.locked():
                    point, initial = store.load_entry()  # another process may have just done it
                    if point is None:
                        initial = fetch()
                        point = sts.storage_point
                        store.storage_point = point
                        store.save(initial)
        else:
            initial = fetch()
            point = sts.storage_point
        if point is None:  # pragma: no cover - the API always returns the storage point
            point = StoragePoint.from_api(self.api.workspace(name))
        refreshing = RefreshingS3Credentials(
            fetch,
            advisory_window=self.advisory_window,
            mandatory_window=self.mandatory_window,
            clock=self._clock,
            store=store,
            initial=initial,
        )

        def resolve_again() -> StoragePoint:
            # The cached entry named a store that cannot be reached: new
            # credentials come with the description the API gives now, and
            # both replace the entry (replace_refused saves them).
            current = refreshing.current
            if current is None:
                refreshing.get()  # an exchange, which brings the description too
            else:
                refreshing.replace_refused(current)
            return sts.storage_point or point

        return Workspace(
            point,
            refreshing,
            verify=self.settings.verify,
            api_url=self.api_url,
            cache_dir=self.settings.cache_dir,
            transfer_config=self.transfer_config,
            resolve_again=resolve_again if cached else None,
        )

    def _store(self, name: str) -> CredentialCache | None:
        if not self.cache:
            return None
        subject = self._subject()
        if subject is None:
            logger.debug("no token subject known: STS credentials are not cached on disk")
            return None
        return CredentialCache(
            self.settings.cache_dir, api_url=self.api_url, workspace=name, subject=subject
        )

    def _subject(self) -> str | None:
        """The principal's ``sub``, preferably without any network call.

        Order: the in-memory token, the token cache file (even an expired
        token names the same principal), then a valid token (may contact the
        identity provider).
        """
        creds = self.credentials
        subject = creds.subject
        if subject:
            return subject
        from sts_bridge.auth import unverified_claims

        cache = getattr(creds, "cache", None)
        if cache is not None:
            try:
                cached = cache.load()
            except Exception:  # a broken token cache is the auth layer's business
                cached = None
            if cached is not None:
                for raw in (cached.access_token, cached.id_token):
                    sub = unverified_claims(raw).get("sub")
                    if isinstance(sub, str) and sub:
                        return sub
        creds.token()
        return creds.subject

    def _usernames(self) -> list[str]:
        names: list[str] = []
        claims = dict(self.credentials.claims)
        for key in ("preferred_username", "username", "name"):
            value = claims.get(key)
            if isinstance(value, str) and value and value not in names:
                names.append(value)
        if names:
            return names
        try:
            info = self.user_info()
        except Exception as exc:  # best effort: the default rules still apply
            logger.debug("user info unavailable: %s", exc)
            return names
        for claim in getattr(info, "claims", None) or []:
            if getattr(claim, "type", None) in ("preferred_username", "username"):
                value = getattr(claim, "value", None)
                if isinstance(value, str) and value and value not in names:
                    names.append(value)
        value = getattr(info, "name", None)
        if isinstance(value, str) and value and value not in names:
            names.append(value)
        return names

    def _platform_hints(self) -> list[str]:
        hints: list[str] = []
        claims = self.credentials.claims
        scope = claims.get("scope")
        scopes = list(self.settings.scopes)
        if isinstance(scope, str):
            scopes += scope.split()
        platforms = claims.get("platforms")
        if isinstance(platforms, dict):
            scopes += [str(p) for p in platforms]
        for value in scopes:
            if value not in hints and value not in ("openid", "email", "profile", "offline_access"):
                hints.append(value)
        return hints

    def _default_memo_path(self, subject: str) -> Any:
        key = json.dumps({"api_url": self.api_url, "subject": subject}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.settings.cache_dir / "sts" / f"default-{digest}.json"

    def _remembered_default(self, subject: str | None) -> str | None:
        if not self.cache or subject is None:
            return None
        try:
            data = read_private_json(self._default_memo_path(subject))
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        if isinstance(data, dict) and isinstance(data.get("workspace"), str):
            return str(data["workspace"])
        return None

    def _remember_default(self, subject: str | None, name: str) -> None:
        if not self.cache or subject is None:
            return
        try:
            atomic_write(self._default_memo_path(subject), json.dumps({"workspace": name}).encode())
        except OSError as exc:
            logger.debug("cannot remember the default workspace: %s", exc)


class _LazyStsFetcher(StsFetcher):
    """An :class:`StsFetcher` that builds the API only when an exchange is needed.

    A 404 becomes :class:`WorkspaceNotFoundError` listing the available names.
    """

    def __init__(self, client: Client, workspace: str) -> None:
        self._owner = client
        self.workspace = workspace
        self._clock_fn = client._clock
        self.storage_point = None
        self.calls = 0

    def __call__(self) -> S3Credentials:
        self.api = self._owner.api
        self._clock = self._clock_fn or utc_now
        try:
            return super().__call__()
        except WorkspaceNotFoundError:
            raise
        except NotFoundError as exc:
            raise workspace_not_found(self.workspace, self._owner.workspaces(), exc) from exc


def workspace_not_found(
    name: str, available: list[str], cause: NotFoundError | None = None
) -> WorkspaceNotFoundError:
    """A :class:`WorkspaceNotFoundError` with the available names and a did-you-mean."""
    import difflib  # only on this error path (a warm run never gets here)

    matches = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
    return WorkspaceNotFoundError(
        name,
        available,
        suggestion=matches[0] if matches else None,
        detail=cause.detail if cause is not None else None,
    )


def choose_default_workspace(
    names: list[str], *, usernames: list[str], platforms: list[str]
) -> str:
    """Pick the default workspace among ``names``.

    ``<platform>-<username>-private-workspace`` (preferring a platform from
    ``platforms``), else the only workspace. Raises :class:`WorkspaceError`.
    """
    for username in usernames:
        pattern = re.compile(r"^(?P<platform>[^-]+)-" + re.escape(username) + "-private-workspace$")
        private = [n for n in names if pattern.match(n)]
        preferred = [n for n in private if n.split("-", 1)[0] in platforms]
        if len(preferred) == 1:
            return preferred[0]
        if len(private) == 1:
            return private[0]
    if len(names) == 1:
        return names[0]
    if not names:
        raise WorkspaceError(
            "you have no workspace on this platform",
            hint="ask the platform operators to create one for you",
        )
    raise WorkspaceError(
        f"cannot choose a default workspace among {len(names)}: {', '.join(names)}",
        hint="set TERRAPI_WORKSPACE or pass --workspace NAME",
    )


def upload_to_workspace(
    source: Source,
    key: str | None = None,
    *,
    workspace: Workspace | str | None = None,
    client: Client | None = None,
    **kwargs: Any,
) -> UploadResult:
    """One call: resolve the workspace (from the environment) and upload one file or stream.

    ``workspace`` is a ``Workspace`` object, a workspace name, or ``None``
    (TERRAPI_WORKSPACE or your default workspace); ``client`` a
    :class:`Client` (default ``Client.from_env()``). Other keyword arguments
    go to :meth:`Workspace.upload`. A directory raises
    :class:`~sts_bridge.errors.TransferError` before any request: upload it with
    :meth:`Workspace.upload_directory`. Raises what :meth:`Client.from_env`,
    :meth:`Client.workspace` and :meth:`Workspace.upload` raise.
    """
    if workspace is not None and not isinstance(workspace, str):
        ws = workspace
    else:
        if client is None:
            client = Client.from_env()
        ws = client.workspace(workspace)
    return ws.upload(source, key, **kwargs)
