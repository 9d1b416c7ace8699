"""GDAL and rasterio on a workspace, with credentials that refresh for hours.

GDAL (3.10, as bundled in rasterio's wheels; 3.12 in pyogrio's; 3.9 in
fiona's) has no ``credential_process``
and takes no credentials callback; it does refresh from the AWS
container-credentials endpoint (``AWS_CONTAINER_CREDENTIALS_FULL_URI`` plus
``AWS_CONTAINER_AUTHORIZATION_TOKEN``), both when it opens a file and while
a dataset stays open. :func:`gdal_env` serves that endpoint from a helper
process (see :mod:`sts_bridge.interop.credentials_relay` for why not from a
thread) and gives GDAL its own endpoint options, which it reads instead of
``AWS_ENDPOINT_URL``. Every GDAL of the process it can reach gets them:
rasterio's (through ``rasterio.Env``), pyogrio's (geopandas' vector I/O,
``pyogrio.set_gdal_config_options``) and fiona's (geopandas'
``engine="fiona"``, through ``fiona.Env``), each wheel bundling its own
library::

    from sts_bridge.interop.gdal import gdal_env

    with gdal_env(ws) as gdal_ws:              # also enters rasterio.Env(...)
        with rasterio.open(gdal_ws.path("run-42/out.tif"), "w", **profile) as dst:
            dst.write(array)

        gdf.to_file(gdal_ws.path("run-42/roads.gpkg"))     # geopandas through pyogrio
        roads = geopandas.read_file(gdal_ws.path("run-42/roads.gpkg"))
        roads = geopandas.read_file(gdal_ws.path("run-42/roads.gpkg"), engine="fiona")

    # osgeo.gdal instead of rasterio:
    with gdal_env(ws, rasterio_env=False) as gdal_ws:
        for name, value in gdal_ws.options.items():
            gdal.SetConfigOption(name, value)
        ...

The helper process ends with the context.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sts_bridge.interop.credentials_relay import CredentialsRelay
from sts_bridge.interop.tool_credentials import GDAL_RANDOM_WRITES, gdal_endpoint_options
from sts_bridge.s3.keys import check_relative_key

if TYPE_CHECKING:
    from sts_bridge.workspace import Workspace

__all__ = ["GdalWorkspace", "gdal_endpoint_options", "gdal_env"]

# GDAL reads these profile files before the container endpoint: pointing
# them at an empty file keeps a personal ``[default]`` from winning.
_NO_PROFILE_FILES = {"CPL_AWS_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull}
# Static keys win over everything in GDAL's chain; set empty, GDAL skips them
# (and an empty config option hides the process environment's). rasterio
# also reads their presence: with them set it opens ``s3://`` URLs as they
# are, instead of building a boto3 session that would put the keys of
# ``~/.aws`` (or none) in front of the endpoint.
_NO_STATIC_KEYS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": ""}


@dataclass(frozen=True)
class GdalWorkspace:
    """What :func:`gdal_env` yields: GDAL config options and workspace paths.

    ``options`` holds the credentials endpoint's bearer token (not a
    workspace credential, but keep it out of logs all the same); the repr
    does not show it.
    """

    bucket: str
    prefix: str
    options: dict[str, str] = field(repr=False)

    def path(self, key: str = "") -> str:
        """``/vsis3/<bucket>/<prefix><key>``; ``key`` is confined like every workspace key.

        Raises :class:`~sts_bridge.errors.InvalidKeyError` for an unsafe key.
        """
        if key:
            check_relative_key(key, allow_trailing_slash=True)
        return f"/vsis3/{self.bucket}/{self.prefix}{key}"

    def s3_url(self, key: str = "") -> str:
        """``s3://<bucket>/<prefix><key>`` (rasterio maps it to ``/vsis3/``).

        Raises :class:`~sts_bridge.errors.InvalidKeyError` for an unsafe key.
        """
        if key:
            check_relative_key(key, allow_trailing_slash=True)
        return f"s3://{self.bucket}/{self.prefix}{key}"


@contextlib.contextmanager
def gdal_env(workspace: Workspace, *, rasterio_env: bool = True) -> Iterator[GdalWorkspace]:
    """Make GDAL's ``/vsis3/`` (and rasterio's ``s3://``) read and write ``workspace``.

    Starts a helper process serving the workspace's refreshing credentials
    on a loopback container-credentials URL and yields a
    :class:`GdalWorkspace` whose ``options`` point GDAL at it. pyogrio's
    GDAL and fiona's (each when installed) get the options for the duration
    of the block, and, with ``rasterio_env`` (the default, when rasterio is
    installed), rasterio's through ``rasterio.Env``; for ``osgeo.gdal``
    apply them yourself (``gdal.SetConfigOption``). The helper process is
    stopped when the block ends.

    Raises :class:`~sts_bridge.errors.CredentialsError` (or the error behind
    it) when the first credentials cannot be obtained or the helper does not
    start.
    """
    with CredentialsRelay(workspace.credentials) as relay:
        options = {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": relay.url,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": relay.auth_token,
            **_NO_PROFILE_FILES,
            **_NO_STATIC_KEYS,
            **GDAL_RANDOM_WRITES,
            **gdal_endpoint_options(workspace),
        }
        gdal_ws = GdalWorkspace(workspace.bucket, workspace.prefix, options)
        with _pyogrio_config(options), _fiona_env(options):
            if not rasterio_env:
                yield gdal_ws
                return
            with _rasterio_env(options):
                yield gdal_ws


@contextlib.contextmanager
def _pyogrio_config(options: dict[str, str]) -> Iterator[None]:
    """pyogrio's own GDAL (its wheel bundles one, separate from rasterio's):
    the options for the block, then the values it had before. Its
    configuration is process-wide (``CPLSetConfigOption``), not per thread."""
    try:
        import pyogrio  # type: ignore[import-untyped]
    except ImportError:
        yield
        return
    before = {name: pyogrio.get_gdal_config_option(name) for name in options}
    pyogrio.set_gdal_config_options(options)
    try:
        yield
    finally:
        # None unsets an option that was not set before.
        pyogrio.set_gdal_config_options(before)


@contextlib.contextmanager
def _fiona_env(options: dict[str, str]) -> Iterator[None]:
    """fiona's own GDAL (a third bundled copy), through its public ``fiona.Env``.

    Its options are process-wide GDAL config options, but the Env itself
    is per thread: fiona calls in this thread (geopandas' ``engine="fiona"``
    nests its own ``fiona.Env``, which keeps them) see it, and the values
    from before come back when it exits.
    """
    try:
        import fiona  # type: ignore[import-untyped]
    except ImportError:
        yield
        return
    from fiona.env import setenv as fiona_setenv  # type: ignore[import-untyped]

    # Like rasterio.Env, fiona.Env refuses the static-key options (EnvError);
    # set in its environment, they also tell fiona the environment has
    # credentials, so an ``s3://`` path does not bring in a boto3 session
    # (whose keys would win over the endpoint).
    static = {name: options[name] for name in _NO_STATIC_KEYS}
    others = {name: value for name, value in options.items() if name not in static}
    with fiona.Env(**others):
        fiona_setenv(**static)
        yield


@contextlib.contextmanager
def _rasterio_env(options: dict[str, str]) -> Iterator[Any]:
    try:
        import rasterio  # type: ignore[import-untyped]
    except ImportError:
        yield None
        return
    from rasterio.env import setenv  # type: ignore[import-untyped]

    # rasterio.Env refuses the static-key options (EnvError): set them once
    # its environment is in place; it clears them on exit.
    static = {name: options[name] for name in _NO_STATIC_KEYS}
    others = {name: value for name, value in options.items() if name not in static}
    with rasterio.Env(**others) as env:
        setenv(**static)
        yield env
