"""``ServiceUsers``: one process acting for many callers, each in their own workspace.

For every verified :class:`~sts_bridge.service.verify.Caller` it keeps one
user's state: the API token obtained for that user (RFC 8693 exchange by
default, or the caller's token forwarded), a :class:`~sts_bridge.Client`
and through it the user's workspaces and STS credentials. What is shared:
one TerrAPI connection pool (:meth:`TerrapiApi.with_credentials`) and the
service's token-exchange client.

Bounds: at most ``max_users`` users are held; one idle longer than
``idle_seconds`` is dropped at the next call; the least recently used goes
first when the cache is full. A dropped user's workspaces are closed (their
connection pools released) and the user is rebuilt on their next call (one
new exchange and STS call).

Per user, the exchange runs under that user's token lock and the STS call
under that user's client lock: many concurrent requests of one user cause
one of each per credential lifetime; requests of different users never
wait for each other. The cache is keyed by ``(issuer, subject)`` of the
verified token, and each user's credentials refuse a token of another
subject, so nothing of one user is ever served to another.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sts_bridge.aio import AsyncWorkspace, run_cancellable
from sts_bridge.auth.base import Token, TokenCredentials
from sts_bridge.auth.exchange import (
    ExchangedTokenCredentials,
    ForwardedTokenCredentials,
    TokenExchange,
)
from sts_bridge.client import Client
from sts_bridge.clock import Clock
from sts_bridge.config import Settings, require
from sts_bridge.credentials.refreshing import DEFAULT_ADVISORY_WINDOW, DEFAULT_MANDATORY_WINDOW
from sts_bridge.errors import AuthError
from sts_bridge.service.verify import Caller

if TYPE_CHECKING:
    from sts_bridge.s3.config import TransferConfig
    from sts_bridge.terrapi.api import TerrapiApi
    from sts_bridge.workspace import Workspace

__all__ = ["DEFAULT_IDLE_SECONDS", "DEFAULT_MAX_USERS", "ServiceUsers"]

logger = logging.getLogger("sts_bridge.service")

DEFAULT_MAX_USERS = 1000
DEFAULT_IDLE_SECONDS = 900.0


@dataclass
class _UserState:
    credentials: ExchangedTokenCredentials | ForwardedTokenCredentials
    client: Client
    last_used: float
    default_workspace: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class ServiceUsers:
    """The per-user state of a service, bounded (see the module docstring).

    :param settings: the service's own settings: ``api_url``, ``issuer``,
        ``client_id`` / ``client_secret`` (the client allowed to exchange
        tokens), ``audience`` (the API's), ``scopes`` (what the service asks
        for each user; empty: the scopes of the caller's token), TLS.
    :param forward_token: hand the caller's token to the API unchanged
        instead of exchanging it (only where the API accepts the service's
        audience; off by default).
    :param exchange: a :class:`TokenExchange` (default: built from ``settings``).
    :param max_users: / :param idle_seconds: the bounds of the cache.
    :param leeway: seconds before an exchanged token's expiry at which it is
        exchanged again.
    :param advisory_window: / :param mandatory_window: the STS refresh windows.
    :param transfer_config: the transfer knobs of every user's workspace.
    :param clock: tz-aware "now" (tests); ``monotonic`` the idle clock (tests).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        forward_token: bool = False,
        exchange: TokenExchange | None = None,
        max_users: int = DEFAULT_MAX_USERS,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        leeway: float = 60.0,
        advisory_window: float = DEFAULT_ADVISORY_WINDOW,
        mandatory_window: float = DEFAULT_MANDATORY_WINDOW,
        transfer_config: TransferConfig | None = None,
        clock: Clock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_users < 1:
            raise ValueError("max_users must be at least 1")
        if idle_seconds <= 0:
            raise ValueError("idle_seconds must be positive")
        require(settings, "api_url")
        # Each user's default workspace is their own: the service's TERRAPI_WORKSPACE
        # names the service's workspace, never a user's.
        self.settings = settings.replace(workspace=None, token=None, token_command=None)
        self.forward_token = forward_token
        self._exchange = exchange
        self.max_users = max_users
        self.idle_seconds = float(idle_seconds)
        self.leeway = leeway
        self.advisory_window = advisory_window
        self.mandatory_window = mandatory_window
        self.transfer_config = transfer_config
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._users: OrderedDict[tuple[str, str], _UserState] = OrderedDict()
        self._api: TerrapiApi | None = None
        self.evictions = 0  # users dropped (idle or for room)

    def __repr__(self) -> str:
        return (
            f"ServiceUsers(api_url={self.settings.api_url!r}, users={len(self)}, "
            f"max_users={self.max_users}, idle_seconds={self.idle_seconds:g}, "
            f"forward_token={self.forward_token})"
        )

    def __len__(self) -> int:
        return len(self._users)

    # -- what is shared --------------------------------------------------------

    @property
    def exchange(self) -> TokenExchange:
        """The service's token-exchange client (built on first use)."""
        with self._lock:
            if self._exchange is None:
                self._exchange = _exchange_from_settings(self.settings)
            return self._exchange

    def _shared_api(self, credentials: TokenCredentials) -> TerrapiApi:
        with self._lock:
            if self._api is None:
                from sts_bridge.terrapi.api import TerrapiApi

                assert self.settings.api_url is not None
                self._api = TerrapiApi(
                    self.settings.api_url, _NoPrincipal(), verify=self.settings.verify
                )
            api = self._api
        return api.with_credentials(credentials)

    # -- per user ----------------------------------------------------------------

    def client(self, caller: Caller) -> Client:
        """The :class:`~sts_bridge.Client` acting for ``caller`` (built on their first call)."""
        return self._state(caller).client

    def workspace(self, caller: Caller, name: str | None = None) -> Workspace:
        """The caller's workspace ``name`` (default: their own private workspace).

        Raises what :meth:`Client.workspace <sts_bridge.Client.workspace>`
        raises, and the :class:`~sts_bridge.errors.AuthError` of a refused
        exchange.
        """
        state = self._state(caller)
        if name is None:
            # Once per user: concurrent first requests would each list the workspaces.
            with state.lock:
                if state.default_workspace is None:
                    state.default_workspace = state.client.default_workspace_name()
                name = state.default_workspace
        return state.client.workspace(name)

    async def async_workspace(
        self, caller: Caller, name: str | None = None, *, executor: Executor | None = None
    ) -> AsyncWorkspace:
        """:meth:`workspace` for asyncio: the exchange and the STS call (when this
        user needs them) run in a worker thread; an :class:`~sts_bridge.aio.AsyncWorkspace`."""
        ws = await run_cancellable(executor, lambda _cancelled: self.workspace(caller, name))
        return AsyncWorkspace(ws, executor=executor)

    def forget(self, caller: Caller) -> bool:
        """Drop ``caller``'s state now (e.g. at logout), closing their workspaces'
        connections; ``True`` when there was some."""
        with self._lock:
            state = self._users.pop(caller.key, None)
        _release([state] if state is not None else [])
        return state is not None

    def close(self) -> None:
        """Drop every user (closing their workspaces' connections) and release the
        shared API connection pool."""
        with self._lock:
            states = list(self._users.values())
            self._users.clear()
            api, self._api = self._api, None
        _release(states)
        if api is not None:
            api.close()

    def _state(self, caller: Caller) -> _UserState:
        now = self._monotonic()
        dropped: list[_UserState] = []
        with self._lock:
            self._drop_idle(now, dropped)
            state = self._users.get(caller.key)
            if state is not None:
                self._users.move_to_end(caller.key)
                state.last_used = now
        if state is None:
            state = self._new_state(caller, now)
            with self._lock:
                # Another request of the same user may have built one meanwhile: keep that.
                existing = self._users.get(caller.key)
                if existing is not None:
                    state = existing
                    self._users.move_to_end(caller.key)
                else:
                    self._users[caller.key] = state
                    while len(self._users) > self.max_users:
                        dropped.append(self._users.popitem(last=False)[1])
                        self.evictions += 1
        # Outside the lock: closing sockets must not hold up other users' requests.
        _release(dropped)
        state.credentials.offer(caller.token)
        return state

    def _drop_idle(self, now: float, dropped: list[_UserState]) -> None:
        """Called with the lock held; the oldest entries come first, into ``dropped``."""
        while self._users:
            key, oldest = next(iter(self._users.items()))
            if now - oldest.last_used <= self.idle_seconds:
                return
            dropped.append(self._users.pop(key))
            self.evictions += 1

    def _new_state(self, caller: Caller, now: float) -> _UserState:
        credentials: ExchangedTokenCredentials | ForwardedTokenCredentials
        if self.forward_token:
            credentials = ForwardedTokenCredentials(
                caller.subject, caller.token, leeway=min(self.leeway, 5.0), clock=self._clock
            )
        else:
            credentials = ExchangedTokenCredentials(
                self.exchange, caller.subject, caller.token, leeway=self.leeway, clock=self._clock
            )
        client = Client(
            self.settings,
            credentials=credentials,
            api=self._shared_api(credentials),
            cache=False,
            advisory_window=self.advisory_window,
            mandatory_window=self.mandatory_window,
            clock=self._clock,
            transfer_config=self.transfer_config,
        )
        return _UserState(credentials=credentials, client=client, last_used=now)


def _release(states: list[_UserState]) -> None:
    """Close the connection pools of dropped users' workspaces (the shared API pool
    is not theirs: ``Client.close`` leaves a given API open). A request of that
    user still in flight finishes; its connection is closed when given back."""
    for state in states:
        try:
            state.client.close()
        except Exception as exc:  # one user's sockets must not fail another's request
            logger.warning("closing a dropped user's connections failed: %s", exc)


class _NoPrincipal(TokenCredentials):
    """The shared API object's own credentials: it acts for nobody, only its copies do."""

    def _fetch(self, current: Token | None) -> Token:
        raise AuthError("the shared API client acts for no user")


def _exchange_from_settings(
    settings: Settings, scopes: Sequence[str] | None = None
) -> TokenExchange:
    from sts_bridge.auth.discovery import discover
    from sts_bridge.auth.oauth import OAuthClient

    require(settings, "issuer", "client_secret")
    assert settings.issuer is not None
    oauth = OAuthClient(
        discover(settings.issuer, verify=settings.verify),
        settings.client_id,
        settings.client_secret,
        verify=settings.verify,
        audience=settings.audience,
    )
    return TokenExchange(oauth, scopes=settings.scopes if scopes is None else scopes)
