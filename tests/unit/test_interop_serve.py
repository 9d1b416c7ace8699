"""Units of the GDAL and ``credentials --serve`` interop: the child's
environment, the delegated-process refusal, the snapshot's expiry, the
expired-credentials error, GDAL paths (no platform needed)."""

from __future__ import annotations

import datetime as dt
import importlib
import stat
import sys
from pathlib import Path

import pytest

from sts_bridge.credentials.refreshing import RefreshingS3Credentials, S3Credentials
from sts_bridge.errors import (
    ConfigurationError,
    CredentialsError,
    InvalidKeyError,
    LoginRequiredError,
    StorageAccessDeniedError,
)
from sts_bridge.terrapi.storage_point import StoragePoint
from sts_bridge.workspace import Workspace

# Far from expiry: the unit tests may run long after this module is imported.
NOW = dt.datetime.now(dt.timezone.utc)
CREDS = S3Credentials("AKIDSNAPSHOT", "s3cr3t-value", "t0ken-value", NOW + dt.timedelta(days=1))


def _workspace(endpoint: str = "http://127.0.0.1:7480", style: str = "path") -> Workspace:
    point = StoragePoint(
        name="gep-team-ws",
        bucket="bucket",
        prefix="team/",
        endpoint_url=endpoint,
        region="eu-1",
        addressing_style=style,
    )
    return Workspace(point, RefreshingS3Credentials(lambda: CREDS))


def test_served_child_environment(tmp_path: Path) -> None:
    from sts_bridge.interop.child_env import served_child_environment

    base = {
        "HOME": str(tmp_path),
        "PATH": "/usr/bin",
        "TERRAPI_CLIENT_SECRET": "client-secret",
        "TERRAPI_TOKEN": "user-token",
        "TERRAPI_TOKEN_COMMAND": "print-token",
        "AWS_ACCESS_KEY_ID": "AKIAHOSTILE",
        "AWS_SECRET_ACCESS_KEY": "hostile",
        "AWS_PROFILE": "personal",
    }
    with served_child_environment(
        _workspace(),
        credentials_url="http://127.0.0.1:1/credentials",
        auth_token="bearer",
        base=base,
    ) as env:
        for name in ("TERRAPI_CLIENT_SECRET", "TERRAPI_TOKEN", "TERRAPI_TOKEN_COMMAND"):
            assert name not in env
        assert "AWS_ACCESS_KEY_ID" not in env and "AWS_PROFILE" not in env
        assert env["PATH"] == "/usr/bin"
        assert env["STS_BRIDGE_DELEGATED"] == "1"
        assert env["STS_BRIDGE_WORKSPACE_URL"] == "workspace://gep-team-ws/"
        assert env["STS_BRIDGE_S3_URI"] == "s3://bucket/team/"
        assert env["AWS_S3_ENDPOINT"] == "127.0.0.1:7480"
        assert env["AWS_HTTPS"] == "NO" and env["AWS_VIRTUAL_HOSTING"] == "FALSE"
        assert env["AWS_REQUEST_CHECKSUM_CALCULATION"] == "WHEN_REQUIRED"
        assert env["AWS_RESPONSE_CHECKSUM_VALIDATION"] == "WHEN_REQUIRED"
        config = Path(env["AWS_CONFIG_FILE"])
        private = config.parent
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        text = config.read_text()
        assert "[default]" in text and "request_checksum_calculation = when_required" in text
        assert "region = eu-1" in text
        assert "aws_access_key_id" not in Path(env["AWS_SHARED_CREDENTIALS_FILE"]).read_text()
        assert env["CPL_AWS_CREDENTIALS_FILE"] == env["AWS_SHARED_CREDENTIALS_FILE"]
        assert Path(env["STS_BRIDGE_CACHE_DIR"]).parent == private
    assert not private.exists()


def test_gdal_endpoint_options_follow_the_workspace() -> None:
    from sts_bridge.interop.gdal import gdal_endpoint_options

    plain = gdal_endpoint_options(_workspace())
    assert plain["AWS_S3_ENDPOINT"] == "127.0.0.1:7480" and plain["AWS_HTTPS"] == "NO"
    aws = gdal_endpoint_options(_workspace("https://s3.eu-1.example.com", style="virtual"))
    assert aws["AWS_S3_ENDPOINT"] == "s3.eu-1.example.com"
    assert aws["AWS_HTTPS"] == "YES" and aws["AWS_VIRTUAL_HOSTING"] == "TRUE"
    assert aws["AWS_REGION"] == "eu-1"


def test_gdal_paths_are_confined() -> None:
    from sts_bridge.interop.gdal import GdalWorkspace

    gdal_ws = GdalWorkspace("bucket", "team/", {"AWS_CONTAINER_AUTHORIZATION_TOKEN": "bearer"})
    assert gdal_ws.path("a/b.tif") == "/vsis3/bucket/team/a/b.tif"
    assert gdal_ws.s3_url("a/b.tif") == "s3://bucket/team/a/b.tif"
    for unsafe in ("../other/x.tif", "a//b.tif", "/abs.tif"):
        with pytest.raises(InvalidKeyError):
            gdal_ws.path(unsafe)
        with pytest.raises(InvalidKeyError):
            gdal_ws.s3_url(unsafe)
    assert "bearer" not in repr(gdal_ws)


def test_gdal_env_without_fiona(monkeypatch: pytest.MonkeyPatch) -> None:
    """fiona is optional: with it absent, gdal_env configures the other GDALs
    as before (and leaves an installed fiona's GDAL alone)."""
    from sts_bridge.interop.gdal import gdal_env

    pyogrio = pytest.importorskip("pyogrio")
    try:
        installed_fiona_env = importlib.import_module("fiona.env")
    except ImportError:
        installed_fiona_env = None
    # None in sys.modules makes ``import fiona`` raise ImportError
    monkeypatch.setitem(sys.modules, "fiona", None)
    monkeypatch.setitem(sys.modules, "fiona.env", None)

    with gdal_env(_workspace(), rasterio_env=False) as gdal_ws:
        assert gdal_ws.options["AWS_S3_ENDPOINT"] == "127.0.0.1:7480"
        assert pyogrio.get_gdal_config_option("AWS_S3_ENDPOINT") == "127.0.0.1:7480"
        if installed_fiona_env is not None:
            assert installed_fiona_env.get_gdal_config("AWS_S3_ENDPOINT") is None
    assert pyogrio.get_gdal_config_option("AWS_S3_ENDPOINT") is None


def test_a_delegated_process_refuses_every_login_route(monkeypatch: pytest.MonkeyPatch) -> None:
    from sts_bridge.auth import credentials_from_settings
    from sts_bridge.auth.factory import logout
    from sts_bridge.config import Settings

    settings = Settings(token="a-user-token", issuer="https://idp.example.com", client_id="cli")
    assert credentials_from_settings(settings, interactive=False).token() == "a-user-token"
    monkeypatch.setenv("STS_BRIDGE_DELEGATED", "1")
    with pytest.raises(LoginRequiredError, match="credentials --serve"):
        credentials_from_settings(settings, interactive=False)
    with pytest.raises(LoginRequiredError, match="never your login"):
        logout(settings)


def test_delegated_workspace_is_only_the_served_one() -> None:
    from sts_bridge.interop.delegated import delegated_workspace

    env = {
        "STS_BRIDGE_WORKSPACE": "gep-team-ws",
        "STS_BRIDGE_S3_URI": "s3://bucket/team/",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:7480/",
        "AWS_REGION": "eu-1",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:1/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "bearer",
    }
    ws = delegated_workspace(None, environ=env)
    assert (ws.name, ws.bucket, ws.prefix, ws.endpoint_url) == (
        "gep-team-ws",
        "bucket",
        "team/",
        "http://127.0.0.1:7480",
    )
    with pytest.raises(ConfigurationError, match="only use the served workspace"):
        delegated_workspace("another-ws", environ=env)
    with pytest.raises(ConfigurationError, match="AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        delegated_workspace(None, environ={**env, "AWS_CONTAINER_CREDENTIALS_FULL_URI": ""})
    # nothing listens there: a clear credentials error, not a traceback
    with pytest.raises(CredentialsError, match="gave no credentials"):
        ws.credentials()


def test_storage_options_is_a_snapshot_with_its_expiry() -> None:
    from sts_bridge.interop.tool_credentials import storage_options

    options = storage_options(_workspace())
    assert options.expiry == CREDS.expiry
    assert options["key"] == "AKIDSNAPSHOT" and options["endpoint_url"] == "http://127.0.0.1:7480"
    assert "expiry" not in options  # ** into s3fs takes only its own arguments
    assert "s3cr3t-value" not in repr(options) and "t0ken-value" not in repr(options)


def test_access_denied_on_expired_credentials_says_they_expired() -> None:
    from sts_bridge.s3.errors import map_s3_error

    what = "uploading 'a.txt'"
    past = NOW - dt.timedelta(seconds=1)
    err = map_s3_error("AccessDenied", 403, what, signed_until=past)
    assert isinstance(err, CredentialsError)
    assert "had expired" in err.message
    later = NOW + dt.timedelta(days=1)
    fresh = map_s3_error("AccessDenied", 403, what, signed_until=later)
    assert isinstance(fresh, StorageAccessDeniedError)
    assert isinstance(map_s3_error("AccessDenied", 403, what), StorageAccessDeniedError)


def test_relay_helper_refuses_a_missing_handshake() -> None:
    import io

    from sts_bridge.interop.credentials_relay import serve_relay

    assert serve_relay(io.StringIO(""), io.StringIO()) == 2
