"""``workspace://<workspace>/<key>`` URLs: one way to name data in a workspace.

The same URL works in the CLI (``sts-bridge sync``), in fsspec and in every
library that speaks fsspec (xarray, zarr, pandas, pyarrow, Dask,
universal_pathlib). The key is relative to the workspace prefix and is
confined exactly as every other key (see :mod:`sts_bridge.s3.keys`): the URL
names an object *inside* the workspace or nothing at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from sts_bridge.errors import InvalidKeyError
from sts_bridge.s3.keys import check_relative_key

__all__ = ["SCHEME", "WorkspaceUrl", "format_workspace_url", "parse_workspace_url"]

SCHEME = "workspace"
_PREFIX = SCHEME + "://"


@dataclass(frozen=True)
class WorkspaceUrl:
    """A parsed ``workspace://`` URL: the workspace name and a relative key.

    ``key`` is ``""`` for the workspace itself and may end with ``/`` when
    the URL names a folder (a prefix).
    """

    workspace: str
    key: str = ""

    def __str__(self) -> str:
        return format_workspace_url(self.workspace, self.key)


def format_workspace_url(workspace: str, key: str = "") -> str:
    """``workspace://<workspace>/<key>``; characters outside URL syntax are quoted."""
    if key:
        check_relative_key(key, allow_trailing_slash=True)
    return f"{_PREFIX}{quote(workspace, safe='')}/{quote(key, safe='/')}"


def parse_workspace_url(url: str, *, allow_bare: bool = False) -> WorkspaceUrl:
    """Split ``workspace://<workspace>/<key>`` into its parts; refuse unsafe keys.

    ``allow_bare`` also accepts ``<workspace>/<key>`` without the scheme (the
    form fsspec hands to ``_strip_protocol`` callers). Raises
    :class:`~sts_bridge.errors.InvalidKeyError` for a URL that does not name
    a workspace or whose key would leave the workspace prefix.
    """
    if url.startswith(_PREFIX):
        rest = url[len(_PREFIX) :]
    elif allow_bare and "://" not in url:
        rest = url
    else:
        raise InvalidKeyError(
            f"{url!r} is not a workspace URL",
            hint="write it as workspace://<workspace>/<key>",
        )
    name, _, key = rest.partition("/")
    workspace = unquote(name)
    if not workspace:
        raise InvalidKeyError(
            f"{url!r} names no workspace",
            hint="write it as workspace://<workspace>/<key>",
        )
    key = unquote(key)
    if key:
        check_relative_key(key, allow_trailing_slash=True)
    return WorkspaceUrl(workspace, key)
