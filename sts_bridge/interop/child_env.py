"""The environment of a command run by ``sts-bridge credentials --serve -- CMD``.

The child gets an AWS configuration of its own, so that whatever the user
keeps in ``~/.aws`` (a personal ``[default]`` wins over the container
endpoint in every AWS credential chain) cannot take over:

- ``AWS_CONFIG_FILE`` and ``AWS_SHARED_CREDENTIALS_FILE`` (and GDAL's
  ``CPL_AWS_CREDENTIALS_FILE``) point at files written in a private 0700
  temporary directory, removed when the command ends; the config's
  ``[default]`` holds the region, path addressing and ``when_required``
  checksums, the credentials file holds no keys;
- the served endpoint: ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` and
  ``AWS_CONTAINER_AUTHORIZATION_TOKEN``;
- ``AWS_REQUEST_CHECKSUM_CALCULATION`` / ``AWS_RESPONSE_CHECKSUM_VALIDATION``
  ``=WHEN_REQUIRED`` (pyarrow's UploadPart gets HTTP 411 from radosgw
  otherwise);
- the endpoint in the AWS names (``AWS_ENDPOINT_URL_S3``, ...) and GDAL's
  (``AWS_S3_ENDPOINT``, ``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING``), and
  ``CPL_VSIL_USE_TEMP_FILE_FOR_RANDOM_WRITE=YES`` so GDAL can write GeoTIFFs;
- the workspace: ``STS_BRIDGE_WORKSPACE`` (name), ``STS_BRIDGE_WORKSPACE_URL``
  (``workspace://<name>/``), ``STS_BRIDGE_S3_URI`` (``s3://<bucket>/<prefix>``);
- :data:`~sts_bridge.auth.delegation.DELEGATED_ENV`, so that sts-bridge in
  the child never uses the user's login, and an empty cache directory.

Removed: static AWS keys and profile selectors, ``TERRAPI_TOKEN``,
``TERRAPI_TOKEN_COMMAND`` and ``TERRAPI_CLIENT_SECRET``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sts_bridge._files import atomic_write
from sts_bridge.auth.delegation import DELEGATED_ENV
from sts_bridge.interop.tool_credentials import GDAL_RANDOM_WRITES, endpoint_assignments

if TYPE_CHECKING:
    from sts_bridge.workspace import Workspace

__all__ = ["REMOVED_FROM_CHILD", "served_child_environment"]

REMOVED_FROM_CHILD = (
    "TERRAPI_CLIENT_SECRET",
    "TERRAPI_TOKEN",
    "TERRAPI_TOKEN_COMMAND",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_NO_SIGN_REQUEST",
)


def _aws_config(workspace: Workspace) -> str:
    return (
        "# written by sts-bridge credentials --serve for the command it runs;\n"
        "# credentials come from AWS_CONTAINER_CREDENTIALS_FULL_URI\n"
        "[default]\n"
        f"region = {workspace.region}\n"
        "request_checksum_calculation = when_required\n"
        "response_checksum_validation = when_required\n"
        "s3 =\n"
        f"    addressing_style = {workspace.addressing_style}\n"
    )


@contextlib.contextmanager
def served_child_environment(
    workspace: Workspace,
    *,
    credentials_url: str,
    auth_token: str,
    base: Mapping[str, str] | None = None,
) -> Iterator[dict[str, str]]:
    """The child's environment (``base``, default ``os.environ``, adjusted; see the module doc).

    The private directory with the child's AWS files exists for the
    duration of the block.
    """
    env = dict(os.environ if base is None else base)
    for name in REMOVED_FROM_CHILD:
        env.pop(name, None)
    private = Path(tempfile.mkdtemp(prefix="sts-bridge-serve-"))  # 0700
    try:
        config = private / "aws-config"
        credentials = private / "aws-credentials"
        atomic_write(config, _aws_config(workspace).encode())
        atomic_write(credentials, b"# no keys: see AWS_CONTAINER_CREDENTIALS_FULL_URI\n")
        cache = private / "sts-bridge-cache"
        cache.mkdir(mode=0o700)
        env.update(
            {
                "AWS_CONFIG_FILE": str(config),
                "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
                "CPL_AWS_CREDENTIALS_FILE": str(credentials),
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": credentials_url,
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": auth_token,
                "AWS_EC2_METADATA_DISABLED": "true",
                **GDAL_RANDOM_WRITES,
                DELEGATED_ENV: "1",
                "STS_BRIDGE_CACHE_DIR": str(cache),
            }
        )
        # endpoint (AWS and GDAL names), checksums, the workspace URLs
        env.update(endpoint_assignments(workspace))
        yield env
    finally:
        shutil.rmtree(private, ignore_errors=True)
