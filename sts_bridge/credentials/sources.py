"""Where a filesystem finds one workspace: the ``WorkspaceSource`` hook.

Anything that reaches a workspace by *name* (the ``workspace://`` filesystem,
a pickled :class:`~sts_bridge.Workspace`, a Dask worker) asks
:func:`resolve_workspace`. It answers with, in this order:

1. a source registered in this process with :func:`register_workspace_source`
   (a Dask worker registers the one its scheduler hands out, a test
   registers a fake), or
2. the configuration chain: ``Client(load_settings()).workspace(name)``,
   built once per process and per platform URL and then reused, so every
   filesystem, pickle and task of a process shares one
   :class:`~sts_bridge.credentials.RefreshingS3Credentials` (one STS
   exchange at a time).

:class:`~sts_bridge.Workspace` satisfies :class:`WorkspaceSource`.

This module sits below ``client``, so it does not build the ``Client``
itself: the package ``sts_bridge/__init__.py`` hands it the opener with
:func:`set_configuration_chain_opener` when any ``sts_bridge`` module is
imported (an unpickling worker or fsspec imports this module, never
``client``, and still needs the chain).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sts_bridge.errors import ConfigurationError

if TYPE_CHECKING:
    from sts_bridge.config import Settings
    from sts_bridge.credentials.refreshing import S3Credentials

__all__ = [
    "ConfigurationChainLister",
    "ConfigurationChainOpener",
    "WorkspaceSource",
    "register_workspace_source",
    "resolve_workspace",
    "set_configuration_chain_lister",
    "set_configuration_chain_opener",
    "workspace_by_reference",
    "workspace_names",
]


@runtime_checkable
class WorkspaceSource(Protocol):
    """What a filesystem needs to reach one workspace.

    ``prefix`` ends with ``/`` or is empty; ``addressing_style`` is ``path``
    or ``virtual``; ``verify`` is TLS verification (``True``, ``False`` or a
    CA bundle path).
    """

    @property
    def name(self) -> str: ...

    @property
    def bucket(self) -> str: ...

    @property
    def prefix(self) -> str: ...

    @property
    def endpoint_url(self) -> str: ...

    @property
    def region(self) -> str: ...

    @property
    def addressing_style(self) -> str: ...

    @property
    def verify(self) -> bool | str: ...

    def credentials(self) -> S3Credentials:
        """A valid frozen snapshot; raises a :class:`~sts_bridge.errors.StsBridgeError`."""
        ...


ConfigurationChainOpener = Callable[["Settings", str], WorkspaceSource]
"""Builds workspace ``name`` from resolved settings (``Client(settings).workspace(name)``)."""

ConfigurationChainLister = Callable[["Settings"], "list[str]"]
"""Names the principal of resolved settings may use: ``Client(settings).workspaces()``."""

_lock = threading.Lock()
_chain_opener: list[ConfigurationChainOpener] = []
_chain_lister: list[ConfigurationChainLister] = []
_registered: dict[str, list[WorkspaceSource]] = {}
_from_chain: dict[tuple[Settings, str], WorkspaceSource] = {}


def register_workspace_source(source: WorkspaceSource) -> Callable[[], None]:
    """Make :func:`resolve_workspace` answer ``source`` for ``source.name`` in this process.

    The newest registration of a name wins; the returned callable
    unregisters exactly this one (calling it twice is harmless). Thread-safe.
    """
    name = source.name
    with _lock:
        _registered.setdefault(name, []).append(source)

    def unregister() -> None:
        with _lock:
            stack = _registered.get(name)
            if stack is None:
                return
            for index in range(len(stack) - 1, -1, -1):
                if stack[index] is source:
                    del stack[index]
                    break
            if not stack:
                del _registered[name]

    return unregister


def workspace_names(*, api_url: str | None = None) -> list[str]:
    """The workspaces this process can reach by name (sorted): those registered
    here, plus those the configuration chain's principal may use.

    Raises what the chain raises (:class:`~sts_bridge.errors.ConfigurationError`
    only when nothing is registered either, auth and API errors).
    """
    with _lock:
        names = set(_registered)
        listers = list(_chain_lister)
    if not listers:
        return sorted(names)
    from sts_bridge.config import load_settings

    try:
        settings = load_settings(**({"api_url": api_url} if api_url else {}))
        names.update(listers[0](settings))
    except ConfigurationError:
        if not names:
            raise
    return sorted(names)


def set_configuration_chain_lister(
    lister: ConfigurationChainLister | None,
) -> ConfigurationChainLister | None:
    """Make ``lister`` what :func:`workspace_names` asks; return the previous one."""
    with _lock:
        previous = _chain_lister[0] if _chain_lister else None
        _chain_lister[:] = [] if lister is None else [lister]
    return previous


def set_configuration_chain_opener(
    opener: ConfigurationChainOpener | None,
) -> ConfigurationChainOpener | None:
    """Make ``opener`` what :func:`resolve_workspace` falls back to; return the previous one.

    ``None`` leaves no fallback (:func:`resolve_workspace` then raises
    :class:`~sts_bridge.errors.ConfigurationError` for an unregistered
    name). Workspaces the previous opener built stay cached. Thread-safe.
    """
    with _lock:
        previous = _chain_opener[0] if _chain_opener else None
        _chain_opener[:] = [] if opener is None else [opener]
    return previous


def resolve_workspace(name: str, *, api_url: str | None = None) -> WorkspaceSource:
    """The source of workspace ``name``: a registered one, else the configuration chain.

    ``api_url`` (the TerrAPI URL a pickle carries) overrides ``TERRAPI_URL``
    for the configuration chain; a registered source wins regardless.
    The chain's workspace is built once per process (per resolved settings
    and name) and reused. Raises
    :class:`~sts_bridge.errors.ConfigurationError` when the chain names no
    platform, and the errors of :meth:`sts_bridge.Client.workspace`
    (``WorkspaceNotFoundError``, auth and API errors).
    """
    with _lock:
        stack = _registered.get(name)
        if stack:
            return stack[-1]
    from sts_bridge.config import load_settings

    settings = load_settings(**({"api_url": api_url} if api_url else {}))
    with _lock:
        known = _from_chain.get((settings, name))
    if known is not None:
        return known
    with _lock:
        openers = list(_chain_opener)
    if not openers:
        raise ConfigurationError(
            f"no workspace source for {name!r} and no configuration chain to open it",
            hint="import sts_bridge (it sets the configuration chain) or register a source",
        )
    # Built outside the lock: it may log in or call the API.
    workspace = openers[0](settings, name)
    with _lock:
        return _from_chain.setdefault((settings, name), workspace)


def workspace_by_reference(name: str, api_url: str | None) -> WorkspaceSource:
    """What an unpickled :class:`~sts_bridge.Workspace` becomes: :func:`resolve_workspace`.

    Raises what :func:`resolve_workspace` raises.
    """
    return resolve_workspace(name, api_url=api_url)
