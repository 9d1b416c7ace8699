"""The real Client -> Workspace -> transfers path on the whole local platform
(the transfer engine's own tests build the Workspace on radosgw's STS alone)."""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest

import sts_bridge
from sts_bridge.s3.config import TransferConfig
from sts_bridge.s3.transfers import PresignClampedWarning

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def _file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.mark.requires_radosgw("fetches a presigned URL")
def test_upload_download_list_presign_delete(platform_env: dict[str, str], tmp_path: Path) -> None:
    ws = sts_bridge.Client.from_env().workspace()
    src = tmp_path / "big.bin"
    digest = _file(src, 40 * MiB)  # multipart
    base = f"e2e/{uuid.uuid4().hex}/"
    result = ws.upload(src, base + "big.bin")
    assert not isinstance(result, list)
    assert result.size == 40 * MiB
    assert result.uri == f"s3://{ws.bucket}/{ws.prefix}{base}big.bin"
    assert result.etag

    out = ws.download(base + "big.bin", tmp_path / "copy.bin")
    assert hashlib.sha256(Path(out).read_bytes()).hexdigest() == digest

    names = [o.key for o in ws.list(base)]
    assert names == [base + "big.bin"]

    url = ws.presign(base + "big.bin", expires_in=600)
    with urllib.request.urlopen(url.url, timeout=30) as response:
        assert hashlib.sha256(response.read()).hexdigest() == digest

    assert ws.delete(base, recursive=True) == 1
    assert list(ws.list(base)) == []


def test_upload_spanning_several_credential_lifetimes(
    short_lived_platform: Any, short_lived_platform_env: dict[str, str], tmp_path: Path
) -> None:
    ws = sts_bridge.Client.from_env().workspace()
    lifetime = short_lived_platform.sts_duration
    src = tmp_path / "slow.bin"
    digest = _file(src, 24 * MiB)
    short_lived_platform.reset_stats()
    seen: list[int] = []

    def slow_progress(done: int, total: int) -> None:
        # Slow the upload down so it outlives several STS lifetimes: every
        # part is signed after its predecessor's credentials may have expired.
        seen.append(done)
        time.sleep(lifetime * 0.45)

    started = time.monotonic()
    result = ws.with_transfer_config(
        TransferConfig(part_size=5 * MiB, part_concurrency=1, multipart_threshold=5 * MiB)
    ).upload(src, "e2e/slow.bin", progress=slow_progress)
    elapsed = time.monotonic() - started
    assert not isinstance(result, list)
    assert elapsed > 2 * lifetime, "the upload must span several credential lifetimes"
    assert result.size == 24 * MiB
    out = ws.download("e2e/slow.bin", tmp_path / "slow-copy.bin")
    assert hashlib.sha256(Path(out).read_bytes()).hexdigest() == digest
    exchanges = short_lived_platform.api_stats()["sts_exchanges"]
    assert exchanges >= 2  # fresh credentials mid-upload, not one per part


@pytest.mark.requires_radosgw("presigned URLs and credential expiry")
def test_presign_is_clamped_to_the_credentials_and_dies_with_them(
    short_lived_platform: Any, short_lived_platform_env: dict[str, str]
) -> None:
    ws = sts_bridge.Client.from_env().workspace()
    ws.upload(b"short-lived link", "e2e/clamped.txt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        link = ws.presign("e2e/clamped.txt", expires_in=3600)
    assert any(issubclass(w.category, PresignClampedWarning) for w in caught)
    remaining = (link.expires_at - link.expires_at.now(link.expires_at.tzinfo)).total_seconds()
    assert 0 < remaining <= short_lived_platform.sts_duration
    with urllib.request.urlopen(link.url, timeout=10) as response:
        assert response.read() == b"short-lived link"
    time.sleep(remaining + 1.5)
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(link.url, timeout=10)
    assert excinfo.value.code == 403


@pytest.mark.requires_radosgw("presigned URLs")
def test_presign_many_urls_all_work(platform_env: dict[str, str]) -> None:
    ws = sts_bridge.Client.from_env().workspace()
    keys = [f"e2e/many/{i}.txt" for i in range(5)]
    for i, key in enumerate(keys):
        ws.upload(f"object {i}".encode(), key)
    links = ws.presign_many(keys, expires_in=300)
    assert [link.key for link in links] == keys
    for i, link in enumerate(links):
        with urllib.request.urlopen(link.url, timeout=10) as response:
            assert response.read() == f"object {i}".encode()


def test_s3_client_has_boto3_transfer_methods(platform_env: dict[str, str], tmp_path: Path) -> None:
    ws = sts_bridge.Client.from_env().workspace()
    s3 = ws.s3_client()
    src = tmp_path / "f.txt"
    src.write_bytes(b"boto3 style")
    s3.upload_file(str(src), ws.bucket, ws.prefix + "e2e/boto3.txt")
    s3.download_file(ws.bucket, ws.prefix + "e2e/boto3.txt", str(tmp_path / "g.txt"))
    assert (tmp_path / "g.txt").read_bytes() == b"boto3 style"


def test_upload_resume_state_lives_in_the_configured_cache_dir(
    platform_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sts_bridge import _files
    from sts_bridge.config import load_settings

    configured = tmp_path / "configured-cache"
    elsewhere = tmp_path / "environment-cache"
    monkeypatch.setenv("STS_BRIDGE_CACHE_DIR", str(elsewhere))
    written: list[Path] = []
    original = _files.atomic_write

    def recording(path: Any, data: bytes, *args: Any, **kwargs: Any) -> Any:
        written.append(Path(path))
        return original(path, data, *args, **kwargs)

    monkeypatch.setattr(_files, "atomic_write", recording)
    ws = sts_bridge.Client(load_settings(cache_dir=configured)).workspace()
    src = tmp_path / "multipart.bin"
    _file(src, 11 * MiB)
    key = f"e2e/{uuid.uuid4().hex}/multipart.bin"
    ws.with_transfer_config(TransferConfig(part_size=5 * MiB, multipart_threshold=1)).upload(
        src, key
    )
    ws.delete(key)
    states = [p for p in written if p.parent.name == "uploads"]
    assert states, "a multipart upload records its resume state"
    assert all(p.parent == configured / "uploads" for p in states), states
    assert not (elsewhere / "uploads").exists()


def test_what_the_store_refuses_is_a_storage_error_not_an_api_error(
    platform_env: dict[str, str], tmp_path: Path
) -> None:
    """A missing object and a 403 from radosgw (a key outside the workspace
    prefix, refused by the session policy) come through the S3 mapper as
    ``StorageError`` subclasses: ``except ApiError`` catches neither."""
    from sts_bridge.s3.signed_http import S3Http

    ws = sts_bridge.Client.from_env().workspace()
    missing_key = f"e2e/missing-{uuid.uuid4().hex}.bin"
    with pytest.raises(sts_bridge.ObjectNotFoundError) as missing:
        ws.download(missing_key, tmp_path / "out.bin")
    assert not isinstance(missing.value, sts_bridge.ApiError)
    assert missing.value.key == missing_key and ws.prefix not in str(missing.value)
    assert not (tmp_path / "out.bin").exists()

    http = S3Http(ws, TransferConfig(), connections=1)
    try:
        outside = f"not-{ws.prefix.strip('/')}/{uuid.uuid4().hex}"  # no workspace prefix
        with pytest.raises(sts_bridge.StorageAccessDeniedError) as denied:
            http.put(outside, b"x", hashlib.sha256(b"x").hexdigest())
    finally:
        http.close()
    assert isinstance(denied.value, sts_bridge.StorageError)
    assert not isinstance(denied.value, sts_bridge.ApiError)
    assert denied.value.status == 403 and denied.value.hint
