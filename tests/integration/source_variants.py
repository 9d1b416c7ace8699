"""A real workspace with some of its parts replaced, as a ``WorkspaceSource`` (tests only)."""

from __future__ import annotations

from typing import Any

#: What a WorkspaceSource tells besides its credentials.
WHERE = ("name", "bucket", "prefix", "endpoint_url", "region", "addressing_style", "verify")


class SourceVariant:
    """``ws`` as a workspace source, with ``replaced`` attributes (``endpoint_url``,
    ``verify``, ...) and, when given, a fixed ``credentials`` snapshot instead of
    ``ws.credentials()``."""

    def __init__(self, ws: Any, *, credentials: Any = None, **replaced: Any) -> None:
        unknown = set(replaced) - set(WHERE)
        if unknown:
            raise TypeError(f"not a WorkspaceSource attribute: {sorted(unknown)}")
        for name in WHERE:
            setattr(self, name, replaced.get(name, getattr(ws, name)))
        self._ws = ws
        self._credentials = credentials

    def credentials(self) -> Any:
        return self._credentials if self._credentials is not None else self._ws.credentials()
