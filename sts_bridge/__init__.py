"""sts-bridge: put data into a TerrAPI storage workspace and share it.

>>> import sts_bridge
>>> ws = sts_bridge.Client.from_env().workspace()   # doctest: +SKIP
>>> ws.upload("out.tif"); ws.presign("out.tif")      # doctest: +SKIP

The public names are re-exported here; ``Client``, ``Workspace``,
``S3Credentials`` and ``upload_to_workspace`` are imported on first access
(PEP 562) so that ``import sts_bridge`` stays fast for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sts_bridge._lazy import lazy_exports
from sts_bridge.credentials.sources import (
    WorkspaceSource,
    set_configuration_chain_lister,
    set_configuration_chain_opener,
)
from sts_bridge.errors import (
    AccessDeniedError,
    ApiError,
    ApiUnavailableError,
    AuthError,
    CallerRefusedError,
    ClockSkewError,
    ConfigurationError,
    CredentialsError,
    InvalidArgumentError,
    InvalidClientError,
    InvalidGrantError,
    InvalidKeyError,
    LoginRequiredError,
    LoginTimeoutError,
    NotAuthenticatedError,
    NotFoundError,
    ObjectNotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    ProviderUnreachableError,
    SharedCredentialsExpiredError,
    StorageAccessDeniedError,
    StorageError,
    StorageUnavailableError,
    StsBridgeError,
    TokenCacheError,
    TokenExchangeError,
    TokenExpiredError,
    TransferError,
    WorkspaceError,
    WorkspaceNotFoundError,
)

if TYPE_CHECKING:
    from sts_bridge.client import Client, upload_to_workspace
    from sts_bridge.config import Settings
    from sts_bridge.credentials.refreshing import S3Credentials
    from sts_bridge.s3.config import TransferConfig
    from sts_bridge.s3.transfers import (
        ObjectInfo,
        PresignClampedWarning,
        PresignedUrl,
        UploadResult,
    )
    from sts_bridge.workspace import Workspace

from sts_bridge._version import VERSION as __version__

_LAZY = {
    "Client": "sts_bridge.client",
    "Workspace": "sts_bridge.workspace",
    "S3Credentials": "sts_bridge.credentials.refreshing",
    "upload_to_workspace": "sts_bridge.client",
    "UploadResult": "sts_bridge.s3.transfers",
    "TransferConfig": "sts_bridge.s3.config",
    "ObjectInfo": "sts_bridge.s3.transfers",
    "PresignedUrl": "sts_bridge.s3.transfers",
    "PresignClampedWarning": "sts_bridge.s3.transfers",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


def _open_from_configuration_chain(settings: Settings, name: str) -> WorkspaceSource:
    from sts_bridge.auth.delegation import in_delegated_process

    if in_delegated_process():
        # a `credentials --serve` child has the served workspace, never the login
        from sts_bridge.interop.delegated import served_workspace

        return served_workspace(name, verify=settings.verify)
    from sts_bridge.client import Client

    return Client(settings).workspace(name)


# Wired here, above every layer: ``credentials.sources`` resolves a workspace
# by name (unpickling, ``workspace://``) but sits below ``client``, and any
# import of an ``sts_bridge`` module runs this file first.
def _list_from_configuration_chain(settings: Settings) -> list[str]:
    from sts_bridge.auth.delegation import in_delegated_process

    if in_delegated_process():
        # the API's list needs the login, which a `--serve` child never uses
        from sts_bridge.interop.delegated import served_workspace_names

        return served_workspace_names()
    from sts_bridge.client import Client

    return Client(settings).workspaces()


set_configuration_chain_opener(_open_from_configuration_chain)
set_configuration_chain_lister(_list_from_configuration_chain)


__all__ = [
    "AccessDeniedError",
    "ApiError",
    "ApiUnavailableError",
    "AuthError",
    "CallerRefusedError",
    "Client",
    "ClockSkewError",
    "ConfigurationError",
    "CredentialsError",
    "InvalidArgumentError",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidKeyError",
    "LoginRequiredError",
    "LoginTimeoutError",
    "NotAuthenticatedError",
    "NotFoundError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "PresignClampedWarning",
    "PresignedUrl",
    "ProviderUnreachableError",
    "S3Credentials",
    "SharedCredentialsExpiredError",
    "StorageAccessDeniedError",
    "StorageError",
    "StorageUnavailableError",
    "StsBridgeError",
    "TokenCacheError",
    "TokenExchangeError",
    "TokenExpiredError",
    "TransferConfig",
    "TransferError",
    "UploadResult",
    "Workspace",
    "WorkspaceError",
    "WorkspaceNotFoundError",
    "__version__",
    "upload_to_workspace",
]
