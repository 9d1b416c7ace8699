"""Workspace credentials in the shapes other tools read.

- ``credential_process_payload``: the JSON of the AWS ``credential_process``
  protocol (Version 1), so ``aws``, every AWS SDK and s5cmd work through a
  profile and call ``sts-bridge credentials`` whenever they need fresh keys.
- ``env_assignments``: ``AWS_*`` variables (plus endpoint and region) for tools
  that only read the environment. A snapshot: it does not refresh.
- ``json_payload``: everything a script needs, in one document.
- ``storage_options``: fsspec / s3fs keyword arguments (a snapshot, with its
  ``expiry``).
- ``obstore_credential_provider``: a refreshing credential provider for
  obstore's ``S3Store(credential_provider=...)``.
- ``obstore_store``: an ``obstore`` ``S3Store`` on the workspace prefix with
  that provider.
- ``polars_options``: ``storage_options`` and a refreshing
  ``credential_provider`` for polars' cloud readers and writers.

The refreshing delegation for child processes is in :mod:`sts_bridge.interop.container_credentials`.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sts_bridge.urls import format_workspace_url

if TYPE_CHECKING:
    from sts_bridge.credentials.refreshing import S3Credentials
    from sts_bridge.workspace import Workspace


def iso_timestamp(expiry: dt.datetime | None) -> str | None:
    if expiry is None:
        return None
    return expiry.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def credential_process_payload(creds: S3Credentials) -> dict[str, Any]:
    """The ``credential_process`` document (AWS CLI / SDK "Version 1")."""
    payload: dict[str, Any] = {
        "Version": 1,
        "AccessKeyId": creds.access_key,
        "SecretAccessKey": creds.secret_key,
    }
    if creds.token:
        payload["SessionToken"] = creds.token
    expiration = iso_timestamp(creds.expiry)
    if expiration:
        # Without Expiration the SDKs treat the keys as static and never
        # ask again; with it they call the process again before expiry.
        payload["Expiration"] = expiration
    return payload


def container_credentials_document(creds: S3Credentials) -> dict[str, Any]:
    """The document of the AWS container-credentials protocol (what the endpoint answers)."""
    doc: dict[str, Any] = {
        "AccessKeyId": creds.access_key,
        "SecretAccessKey": creds.secret_key,
    }
    if creds.token:
        doc["Token"] = creds.token
    expiration = iso_timestamp(creds.expiry)
    if expiration:
        doc["Expiration"] = expiration
    return doc


# /vsis3/ writes sequentially; GeoTIFF (and the COG driver's temporary
# files) need random writes: GDAL stages them in a local temporary file,
# uploaded when the dataset is closed.
GDAL_RANDOM_WRITES = {"CPL_VSIL_USE_TEMP_FILE_FOR_RANDOM_WRITE": "YES"}


def gdal_endpoint_options(workspace: Workspace) -> dict[str, str]:
    """GDAL's own names for where the workspace lives (it ignores ``AWS_ENDPOINT_URL``).

    ``AWS_S3_ENDPOINT`` is ``host:port`` (plus any path), ``AWS_HTTPS`` says
    the scheme, ``AWS_VIRTUAL_HOSTING`` the addressing style; TLS settings
    follow the workspace's ``verify``.
    """
    parts = urlsplit(workspace.endpoint_url)
    options = {
        "AWS_S3_ENDPOINT": parts.netloc + parts.path.rstrip("/"),
        "AWS_HTTPS": "YES" if parts.scheme == "https" else "NO",
        "AWS_VIRTUAL_HOSTING": "TRUE" if workspace.addressing_style == "virtual" else "FALSE",
        "AWS_REGION": workspace.region,
        "AWS_DEFAULT_REGION": workspace.region,
    }
    verify = workspace.verify
    if verify is False:
        options["GDAL_HTTP_UNSAFESSL"] = "YES"
    elif isinstance(verify, str):
        options["CURL_CA_BUNDLE"] = verify
    return options


# With the AWS SDKs' default checksums (``when_supported``) radosgw answers
# pyarrow's UploadPart with HTTP 411 MissingContentLength.
CHECKSUMS_WHEN_REQUIRED = {
    "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "WHEN_REQUIRED",
}


def endpoint_assignments(workspace: Workspace) -> dict[str, str]:
    """Where the workspace lives, in the names the AWS tools, s5cmd and GDAL read.

    Also ``when_required`` checksums, and the workspace as
    ``STS_BRIDGE_WORKSPACE`` (name), ``STS_BRIDGE_WORKSPACE_URL``
    (``workspace://<name>/``) and ``STS_BRIDGE_S3_URI`` (``s3://<bucket>/<prefix>``).
    """
    return {
        "AWS_ENDPOINT_URL_S3": workspace.endpoint_url,
        # s5cmd reads S3_ENDPOINT_URL; older AWS SDKs only AWS_ENDPOINT_URL.
        "AWS_ENDPOINT_URL": workspace.endpoint_url,
        "S3_ENDPOINT_URL": workspace.endpoint_url,
        "AWS_REGION": workspace.region,
        "AWS_DEFAULT_REGION": workspace.region,
        **gdal_endpoint_options(workspace),
        **CHECKSUMS_WHEN_REQUIRED,
        "STS_BRIDGE_WORKSPACE": workspace.name,
        "STS_BRIDGE_WORKSPACE_URL": format_workspace_url(workspace.name),
        "STS_BRIDGE_S3_URI": f"s3://{workspace.bucket}/{workspace.prefix}",
    }


def env_assignments(workspace: Workspace, creds: S3Credentials) -> dict[str, str]:
    """``AWS_*`` credential variables plus endpoint and region (a snapshot)."""
    env = {
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
    }
    if creds.token:
        env["AWS_SESSION_TOKEN"] = creds.token
    expiration = iso_timestamp(creds.expiry)
    if expiration:
        env["AWS_CREDENTIAL_EXPIRATION"] = expiration
    env.update(endpoint_assignments(workspace))
    return env


def json_payload(workspace: Workspace, creds: S3Credentials) -> dict[str, Any]:
    """One JSON document with the workspace location and its credentials."""
    return {
        "workspace": workspace.name,
        "bucket": workspace.bucket,
        "prefix": workspace.prefix,
        "s3_uri": f"s3://{workspace.bucket}/{workspace.prefix}",
        "endpoint_url": workspace.endpoint_url,
        "region": workspace.region,
        "addressing_style": workspace.addressing_style,
        "access_key_id": creds.access_key,
        "secret_access_key": creds.secret_key,
        "session_token": creds.token,
        "expiration": iso_timestamp(creds.expiry),
    }


class SnapshotStorageOptions(dict[str, Any]):
    """fsspec / s3fs keyword arguments holding a credentials snapshot.

    A plain ``dict`` to pass as ``**options``, plus :attr:`expiry`: the
    moment the credentials inside stop working (tz-aware UTC, ``None`` for
    static keys). Nothing refreshes them.
    """

    expiry: dt.datetime | None

    def __init__(self, options: dict[str, Any], expiry: dt.datetime | None) -> None:
        super().__init__(options)
        self.expiry = expiry

    def __repr__(self) -> str:
        # never the secret or the session token
        shown = {k: v for k, v in self.items() if k not in ("secret", "token")}
        return f"SnapshotStorageOptions({shown!r}, expiry={self.expiry!r})"


def storage_options(workspace: Workspace) -> SnapshotStorageOptions:
    """Keyword arguments for ``fsspec.filesystem("s3", **options)`` (s3fs): a SNAPSHOT.

    The credentials inside are the workspace's current ones and stop
    working at ``options.expiry`` (15 minutes at most in production); every
    request after that is refused. For work that may outlive them, use the
    workspace's fsspec filesystem (``workspace://`` URLs, refreshing per
    request), or run the job under ``sts-bridge credentials --serve``.

    Raises :class:`~sts_bridge.errors.CredentialsError` (or the error
    behind it) when no credentials can be obtained.
    """
    creds = workspace.credentials()
    return SnapshotStorageOptions(
        {
            "key": creds.access_key,
            "secret": creds.secret_key,
            "token": creds.token,
            "endpoint_url": workspace.endpoint_url,
            "client_kwargs": {"region_name": workspace.region},
            "config_kwargs": {"s3": {"addressing_style": workspace.addressing_style}},
            "skip_instance_cache": True,
        },
        creds.expiry,
    )


def obstore_credential_provider(workspace: Workspace) -> Callable[[], dict[str, Any]]:
    """A credential provider for ``obstore.store.S3Store``.

    obstore calls it again when ``expires_at`` approaches, so long transfers
    keep working across STS lifetimes.
    """

    def provide() -> dict[str, Any]:
        creds = workspace.credentials()
        return {
            "access_key_id": creds.access_key,
            "secret_access_key": creds.secret_key,
            "token": creds.token,
            "expires_at": creds.expiry,
        }

    return provide


def obstore_store(workspace: Workspace, **options: Any) -> Any:
    """An ``obstore.store.S3Store`` on the workspace (keys relative to its
    prefix), its credentials from :func:`obstore_credential_provider`.

    ``options`` are more ``S3Store`` keyword arguments (``retry_config``,
    ``client_options`` merged with the ones set here, ...). Such a store
    does not pickle (obstore#222: a Python credential provider).
    """
    from obstore.store import S3Store

    client_options: dict[str, Any] = {}
    if workspace.endpoint_url.startswith("http://"):
        client_options["allow_http"] = True
    if workspace.verify is False:
        client_options["allow_invalid_certificates"] = True
    client_options.update(options.pop("client_options", {}))
    # obstore types its options as TypedDicts and its provider as a Protocol.
    store: Any = S3Store
    return store(
        workspace.bucket,
        prefix=workspace.prefix.rstrip("/") or None,
        endpoint=workspace.endpoint_url,
        region=workspace.region,
        virtual_hosted_style_request=workspace.addressing_style == "virtual",
        client_options=client_options,
        credential_provider=obstore_credential_provider(workspace),
        **options,
    )


class PolarsCaWarning(UserWarning):
    """polars' own HTTP client will not trust the workspace's CA bundle."""


def _polars_trusts(bundle: str) -> bool:
    """Whether ``SSL_CERT_FILE`` (``SSL_CERT_DIR`` for a folder of CAs), what
    polars' TLS reads, names ``bundle``."""
    named = os.environ.get("SSL_CERT_DIR" if os.path.isdir(bundle) else "SSL_CERT_FILE")
    if not named:
        return False
    try:
        return os.path.samefile(named, bundle)
    except OSError:
        return False


#: Seconds before the real expiry that polars is told its credentials expire,
#: at most: polars signs with cached credentials until the expiry it was told.
_POLARS_MARGIN = 60.0


def polars_options(workspace: Workspace) -> dict[str, Any]:
    """Keyword arguments for polars' cloud I/O on ``workspace``, refreshing.

    ``{"storage_options": ..., "credential_provider": ...}`` for
    ``pl.scan_parquet`` / ``read_parquet`` / ``read_csv`` / ``scan_csv`` /
    ``write_parquet`` / ``sink_parquet`` / ... with the workspace's
    ``s3://`` URLs (``workspace.s3_url(key)``)::

        pl.scan_parquet(ws.s3_url("tables/*.parquet"), **polars_options(ws))

    ``storage_options`` say where the store is (endpoint, region, path
    addressing, plain HTTP when the endpoint is); the provider hands polars
    the workspace's current credentials each time polars asks, with an
    expiry a little before the real one, so a lazy query or a long-lived
    frame keeps working for as long as the process runs.

    TLS: polars takes no CA bundle option; its HTTP client trusts the file
    in ``SSL_CERT_FILE`` (only that file, read when polars first connects),
    else the system's store. When the workspace trusts a bundle of its own
    (``TERRAPI_CA_BUNDLE`` and the rest of the CA rule) that ``SSL_CERT_FILE``
    does not name, this warns (:class:`PolarsCaWarning`) and says what to do:
    set ``SSL_CERT_FILE`` to the bundle before polars' first cloud call, or
    read through ``workspace://`` file objects, which use the bundle.
    """
    endpoint = workspace.endpoint_url
    options = {
        "aws_endpoint_url": endpoint,
        "aws_region": workspace.region,
        "aws_virtual_hosted_style_request": str(workspace.addressing_style == "virtual").lower(),
    }
    if endpoint.startswith("http://"):
        options["aws_allow_http"] = "true"
    if workspace.verify is False:
        options["allow_invalid_certificates"] = "true"
    elif isinstance(workspace.verify, str) and not _polars_trusts(workspace.verify):
        warnings.warn(
            f"polars will not trust the CA bundle {workspace.verify}: it takes no CA option "
            "and reads SSL_CERT_FILE; set SSL_CERT_FILE to that bundle before polars' first "
            "cloud call, or read workspace:// file objects (fsspec.open) instead",
            PolarsCaWarning,
            stacklevel=2,
        )

    def provide() -> tuple[dict[str, str], int | None]:
        creds = workspace.credentials()
        keys = {"aws_access_key_id": creds.access_key, "aws_secret_access_key": creds.secret_key}
        if creds.token:
            keys["aws_session_token"] = creds.token
        if creds.expiry is None:
            return keys, None
        expires = creds.expiry.timestamp()
        remaining = expires - dt.datetime.now(dt.timezone.utc).timestamp()
        # Told a little early, polars asks again before the store would
        # refuse; never in the past, or it would ask on every request.
        told = expires - min(_POLARS_MARGIN, max(remaining, 0.0) / 4)
        return keys, int(told)

    return {"storage_options": options, "credential_provider": provide}
