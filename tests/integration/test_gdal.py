"""GDAL / rasterio on a workspace across credential lifetimes, against the
real local platform (5 s STS credentials): ``gdal_env`` serves refreshing
credentials from a helper process GDAL cannot deadlock with."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

rasterio = pytest.importorskip("rasterio")
np = pytest.importorskip("numpy")

SIZE = 512
BLOCK = 64

# GDAL caches: with them off every read below is a signed request, so a
# read after expiry needs credentials GDAL fetched again.
NO_CACHES: dict[str, Any] = {"VSI_CACHE": False, "GDAL_CACHEMAX": 0}


def _no_caches(workspace: Any) -> dict[str, Any]:
    """GDAL caches off for the workspace's files: every read is a signed request."""
    return {**NO_CACHES, "CPL_VSIL_CURL_NON_CACHED": f"/vsis3/{workspace.bucket}/"}


def _pixels() -> Any:
    rows = np.arange(SIZE, dtype=np.uint16).reshape(SIZE, 1)
    cols = np.arange(SIZE, dtype=np.uint16).reshape(1, SIZE)
    return (rows * 7 + cols * 3).astype(np.uint16)


def _write_cog(path: str) -> None:
    """A COG made the usual way: CreateCopy of a dataset with the COG driver.

    (``rasterio.open(new_key, "w")`` fails on radosgw before writing: its
    NoSuchKey answer has an empty ``<Message/>``, which GDAL reports as a
    generic AWS error that rasterio's delete-before-overwrite does not
    expect.)
    """
    import rasterio.shutil
    from rasterio.io import MemoryFile

    profile = {
        "driver": "GTiff",
        "width": SIZE,
        "height": SIZE,
        "count": 1,
        "dtype": "uint16",
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
    }
    with MemoryFile() as memory:
        with memory.open(**profile) as staging:
            staging.write(_pixels(), 1)
        with memory.open() as src:
            rasterio.shutil.copy(src, path, driver="COG", blocksize=BLOCK, compress="deflate")


def _windows() -> Iterator[Any]:
    from rasterio.windows import Window

    n = 0
    while True:
        row, col = divmod(n % ((SIZE // BLOCK) ** 2), SIZE // BLOCK)
        yield Window(col * BLOCK, row * BLOCK, BLOCK, BLOCK)
        n += 1


@pytest.fixture
def workspace(short_lived_platform_env: dict[str, str], tmp_path: Path) -> Any:
    import sts_bridge

    return sts_bridge.Client.from_env().workspace()


@pytest.fixture
def hostile_aws_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A personal ``[default]`` with wrong keys, where boto3 and GDAL look first."""
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = AKIAHOSTILE\naws_secret_access_key = hostile\n"
    )
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)


def test_rasterio_writes_then_reads_across_three_lifetimes(
    short_lived_platform: Any, workspace: Any, hostile_aws_profile: None
) -> None:
    from sts_bridge.interop.gdal import gdal_env

    lifetime = short_lived_platform.sts_duration
    key = f"gdal/{uuid.uuid4().hex}.tif"
    expected = _pixels()
    with gdal_env(workspace) as gdal_ws, rasterio.Env(**_no_caches(workspace)):
        _write_cog(gdal_ws.path(key))
        first_creds = workspace.credentials()
        assert first_creds.expiry is not None
        first_expiry = first_creds.expiry.timestamp()
        # which credential lifetime (0 = the first) each pair of reads fell in
        lifetimes_read: set[int] = set()
        windows = _windows()
        with rasterio.open(gdal_ws.s3_url(key)) as kept:
            for _ in range(2000):  # bounded; ends by time below
                lifetimes_read.add(int((time.time() - first_expiry) // lifetime) + 1)
                if max(lifetimes_read) > 3:
                    break
                # a fresh open each time (new HEAD/GET, new credentials lookup)
                window = next(windows)
                with rasterio.open(gdal_ws.path(key)) as src:
                    assert src.profile["driver"] == "GTiff"
                    block = src.read(1, window=window)
                rows, cols = window.toslices()
                assert (block == expected[rows, cols]).all()
                # one dataset kept open since before the first expiry
                window = next(windows)
                rows, cols = window.toslices()
                assert (kept.read(1, window=window) == expected[rows, cols]).all()
                time.sleep(0.3)
    # reads (reopened and kept open) in each of the three lifetimes after the
    # first credentials expired: each needed credentials GDAL fetched again
    assert {1, 2, 3} <= lifetimes_read
    admin = short_lived_platform.s3.client("s3")
    listed = admin.list_objects_v2(Bucket=workspace.bucket, Prefix=workspace.prefix + key)
    assert [o["Size"] > 0 for o in listed.get("Contents", [])] == [True]


def test_the_helper_process_ends_with_the_context(workspace: Any) -> None:
    from sts_bridge.interop.credentials_relay import CredentialsRelay

    with CredentialsRelay(workspace.credentials) as relay:
        pid = relay.pid
        assert pid is not None
        os.kill(pid, 0)  # running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


PARENT = """
import sys, time
import sts_bridge
from sts_bridge.interop.credentials_relay import CredentialsRelay

relay = CredentialsRelay(sts_bridge.Client.from_env().workspace().credentials).start()
print(relay.pid, flush=True)
time.sleep(600)
"""


def test_the_helper_process_ends_when_its_parent_is_killed(workspace: Any, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        helper = int(parent.stdout.readline())
        os.kill(helper, 0)  # running
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
    # the pipe closed with the parent: the helper exits by itself
    for _ in range(200):
        if not _running(helper):
            break
        time.sleep(0.05)
    assert not _running(helper)


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (an exited helper left as a zombie by whoever
    adopted it does not count)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # when the adopter is this process
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


def test_a_snapshot_dies_where_gdal_env_survives(
    short_lived_platform: Any, workspace: Any, hostile_aws_profile: None
) -> None:
    """The control: the same reads with frozen keys fail after one lifetime,
    so the test above does exercise refreshes."""
    from rasterio.errors import RasterioIOError
    from rasterio.session import AWSSession

    from sts_bridge.interop.gdal import gdal_endpoint_options, gdal_env

    key = f"gdal/{uuid.uuid4().hex}.tif"
    with gdal_env(workspace) as gdal_ws:
        _write_cog(gdal_ws.path(key))
    creds = workspace.credentials()
    session = AWSSession(
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
        aws_session_token=creds.token,
    )
    options = {**_no_caches(workspace), **gdal_endpoint_options(workspace)}
    with rasterio.Env(session=session, **options):
        with rasterio.open(gdal_ws.path(key)) as src:
            assert src.width == SIZE
        assert creds.expiry is not None
        time.sleep(max(0.0, creds.expiry.timestamp() - time.time()) + 1)
        with pytest.raises(RasterioIOError), rasterio.open(gdal_ws.path(key)) as src:
            src.read(1)
