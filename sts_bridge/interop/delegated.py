"""The workspace of a process started by ``sts-bridge credentials --serve``.

Such a process has no login (see :mod:`sts_bridge.auth.delegation`); what
it has is the served workspace: its location in ``STS_BRIDGE_WORKSPACE``,
``STS_BRIDGE_S3_URI``, ``AWS_ENDPOINT_URL_S3`` and ``AWS_REGION``, and its
refreshing credentials at ``AWS_CONTAINER_CREDENTIALS_FULL_URI``.
:func:`delegated_workspace` builds a :class:`~sts_bridge.workspace.Workspace`
from exactly that, so ``sts-bridge ls``/``upload``/``download`` work in the
child through the served credentials and nothing else;
:func:`served_workspace` and :func:`served_workspace_names` are what the
configuration chain answers there (``workspace://``, unpickled workspaces,
``ls("")``), since the chain's own answers need the login.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

from sts_bridge.clock import utc_now
from sts_bridge.credentials.refreshing import RefreshingS3Credentials, S3Credentials
from sts_bridge.errors import ConfigurationError, CredentialsError, WorkspaceNotFoundError
from sts_bridge.terrapi.storage_point import DEFAULT_REGION, StoragePoint, normalise_prefix
from sts_bridge.workspace import Workspace

__all__ = [
    "delegated_workspace",
    "fetch_served_credentials",
    "served_workspace",
    "served_workspace_names",
]

_TIMEOUT = 10.0


def fetch_served_credentials(url: str, auth_token: str) -> S3Credentials:
    """Fetch one snapshot from the container-credentials endpoint at ``url``.

    Raises :class:`~sts_bridge.errors.CredentialsError` when the endpoint
    does not answer with credentials.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise CredentialsError(f"the served credentials URL is not http(s): {url!r}")
    request = urllib.request.Request(url, headers={"Authorization": auth_token})  # noqa: S310
    try:
        # the scheme is checked above: http(s) only
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:  # noqa: S310
            doc = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise CredentialsError(
            "the credentials server of `sts-bridge credentials --serve` gave no credentials",
            hint="it serves only while the command it started runs",
        ) from exc
    try:
        expiration = doc.get("Expiration")
        return S3Credentials(
            access_key=str(doc["AccessKeyId"]),
            secret_key=str(doc["SecretAccessKey"]),
            token=doc.get("Token"),
            expiry=_parse_expiration(expiration) if expiration else None,
            issued_at=utc_now(),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CredentialsError(
            "the credentials server of `sts-bridge credentials --serve` answered nonsense"
        ) from exc


def _parse_expiration(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise ConfigurationError(
            f"{name} is not set in this process started by `sts-bridge credentials --serve`",
            hint="run the command directly under `sts-bridge credentials --serve -- ...`",
        )
    return value


def delegated_workspace(
    name: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    verify: bool | str = True,
) -> Workspace:
    """The served workspace, with credentials from the served endpoint.

    ``name`` may only be the served workspace (or ``None``). Raises
    :class:`~sts_bridge.errors.ConfigurationError` when the environment
    does not describe a served workspace or names another one.
    """
    env = os.environ if environ is None else environ
    served = _required(env, "STS_BRIDGE_WORKSPACE")
    if name and name != served:
        raise ConfigurationError(
            f"this process may only use the served workspace {served!r}, not {name!r}",
            hint="serve the workspace you need: sts-bridge credentials NAME --serve -- ...",
        )
    uri = _required(env, "STS_BRIDGE_S3_URI")
    if not uri.startswith("s3://"):
        raise ConfigurationError(f"STS_BRIDGE_S3_URI is not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    point = StoragePoint(
        name=served,
        bucket=bucket,
        prefix=normalise_prefix(prefix),
        endpoint_url=_required(env, "AWS_ENDPOINT_URL_S3").rstrip("/"),
        region=env.get("AWS_REGION") or DEFAULT_REGION,
        addressing_style="virtual" if env.get("AWS_VIRTUAL_HOSTING") == "TRUE" else "path",
    )
    url = _required(env, "AWS_CONTAINER_CREDENTIALS_FULL_URI")
    token = _required(env, "AWS_CONTAINER_AUTHORIZATION_TOKEN")
    refreshing = RefreshingS3Credentials(lambda: fetch_served_credentials(url, token))
    return Workspace(point, refreshing, verify=verify)


def served_workspace_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """The workspaces a ``--serve`` child may use: the served one.

    Raises :class:`~sts_bridge.errors.ConfigurationError` when the
    environment names no served workspace.
    """
    env = os.environ if environ is None else environ
    return [_required(env, "STS_BRIDGE_WORKSPACE")]


def served_workspace(
    name: str, *, environ: Mapping[str, str] | None = None, verify: bool | str = True
) -> Workspace:
    """Workspace ``name`` as a ``--serve`` child resolves it by name.

    The served workspace (:func:`delegated_workspace`); any other name is a
    workspace this process cannot see: :class:`~sts_bridge.errors.WorkspaceNotFoundError`
    (which the filesystem reports as ``FileNotFoundError``, so ``exists`` says
    ``False``), naming the served one.
    """
    served = served_workspace_names(environ)
    if name not in served:
        raise WorkspaceNotFoundError(
            name,
            served,
            status=None,
            detail="this process runs under `sts-bridge credentials --serve` "
            "and may only use the served workspace",
        )
    return delegated_workspace(name, environ=environ, verify=verify)
