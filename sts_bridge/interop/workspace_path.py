"""``UPath("workspace://<workspace>/<key>")``: universal_pathlib's class for workspaces.

Registered through universal_pathlib's entry point (``universal_pathlib.implementations``),
so ``UPath`` builds this class for ``workspace://`` URLs instead of falling back to
its untested default (with a warning). A workspace path behaves as a cloud path
does: the workspace name stands where a bucket would, the key follows; the I/O is
:class:`~sts_bridge.interop.filesystem.WorkspaceFileSystem`'s.
"""

from __future__ import annotations

import fsspec
from upath.implementations.cloud import CloudPath

from sts_bridge.urls import SCHEME

__all__ = ["WorkspacePath"]

# universal_pathlib reads a protocol's path rules (root marker, separators) from
# its fsspec class when that class is loaded; loading it here spares the
# "could not find default for known protocol" fallback.
fsspec.get_filesystem_class(SCHEME)


class WorkspacePath(CloudPath):  # type: ignore[misc]
    """A path inside a workspace: ``workspace://<workspace>/<key>``."""

    __slots__ = ()
