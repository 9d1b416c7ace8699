"""The real Workspace and its TransferEngine against a real radosgw with real STS credentials.

The SDK's own ``Workspace`` and ``RefreshingS3Credentials``; only the
exchange is radosgw's AssumeRoleWithWebIdentity, narrowed by a session policy
to the workspace prefix (as the reference API does), instead of the TerrAPI
call. A tiny OIDC issuer (discovery + JWKS) signs the web identity tokens.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sts_bridge_devstack.s3 import (
    RadosGateway,
    missing_binaries,
    role_policy,
    session_policy,
    trust_policy,
)
from sts_bridge_devstack.static_issuer import StaticIssuer

from sts_bridge.client import upload_to_workspace
from sts_bridge.credentials.refreshing import RefreshingS3Credentials, S3Credentials
from sts_bridge.errors import (
    ApiError,
    InvalidKeyError,
    ObjectNotFoundError,
    StorageError,
    TransferError,
)
from sts_bridge.s3 import download as _download
from sts_bridge.s3 import upload as _upload
from sts_bridge.s3.config import TransferConfig
from sts_bridge.s3.transfers import (
    PresignClampedWarning,
    UploadResult,
)
from sts_bridge.terrapi.storage_point import StoragePoint
from sts_bridge.workspace import Workspace

pytestmark = [
    pytest.mark.integration,
    # Under CI the tests run (and fail loudly) even without Ceph: never a silent skip.
    pytest.mark.skipif(
        bool(missing_binaries()) and not os.environ.get("CI"),
        reason="Ceph binaries missing (run `make setup`): " + ", ".join(missing_binaries()),
    ),
]

AUDIENCE = "sts-bridge-transfers"
BUCKET = "gep-processing-results"
PREFIX = "a2s/"
MiB = 1024 * 1024


# --------------------------------------------------------------------------
# the real Workspace over radosgw's STS (tokens from sts_bridge_devstack.static_issuer)
# --------------------------------------------------------------------------
WORKSPACE_NAME = "gep-processing-results-a2s-service-workspace"


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rgw() -> Iterator[RadosGateway]:
    with RadosGateway(memstore_bytes=512 << 20) as gw:
        yield gw


@pytest.fixture(scope="module")
def sts(rgw: RadosGateway) -> Iterator[Callable[[int], dict[str, Any]]]:
    issuer = StaticIssuer(AUDIENCE).start()
    rgw.create_bucket(BUCKET)
    rgw.register_oidc_provider(issuer.url, [AUDIENCE])
    arn = rgw.create_role(
        "gep-transfers", trust_policy(issuer.url, AUDIENCE), role_policy([BUCKET])
    )

    def fetch(duration: int) -> dict[str, Any]:
        return rgw.assume_role_with_web_identity(
            arn, issuer.token(), "alice", duration, session_policy(BUCKET, PREFIX)
        )

    yield fetch
    issuer.stop()


def _workspace(
    rgw: RadosGateway, sts: Callable[[int], dict[str, Any]], duration: int = 900
) -> Workspace:
    """The SDK's own Workspace and RefreshingS3Credentials; only the exchange is
    radosgw's AssumeRoleWithWebIdentity instead of the TerrAPI call."""

    def fetch() -> S3Credentials:
        c = sts(duration)
        return S3Credentials(
            c["access_key"],
            c["secret_key"],
            c["session_token"],
            c["expiration"],
            datetime.now(timezone.utc),
        )

    point = StoragePoint(
        name=WORKSPACE_NAME, bucket=BUCKET, prefix=PREFIX, endpoint_url=rgw.endpoint_url
    )
    return Workspace(point, RefreshingS3Credentials(fetch))


def _workspace_first_refused(
    rgw: RadosGateway, sts: Callable[[int], dict[str, Any]]
) -> tuple[Workspace, list[str]]:
    """A Workspace whose first credentials the store refuses (a damaged secret,
    as a corrupted cache would hand over); the access keys fetched, in order."""
    fetched: list[str] = []

    def fetch() -> S3Credentials:
        c = sts(900)
        secret = c["secret_key"] if fetched else c["secret_key"][::-1]
        fetched.append(c["access_key"])
        return S3Credentials(
            c["access_key"], secret, c["session_token"], c["expiration"], datetime.now(timezone.utc)
        )

    point = StoragePoint(
        name=WORKSPACE_NAME, bucket=BUCKET, prefix=PREFIX, endpoint_url=rgw.endpoint_url
    )
    return Workspace(point, RefreshingS3Credentials(fetch)), fetched


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call of a Workspace (any copy) that could lead to S3, by name."""
    seen: list[str] = []
    for name in ("credentials", "credentials_for", "s3_client"):
        original = getattr(Workspace, name)

        def recording(self: Workspace, *args: Any, _f: Any = original, _n: str = name) -> Any:
            seen.append(_n)
            return _f(self, *args)

        monkeypatch.setattr(Workspace, name, recording)
    return seen


@pytest.fixture
def ws(rgw: RadosGateway, sts: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STS_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    return _workspace(rgw, sts)


@pytest.fixture
def admin(rgw: RadosGateway, sts: Any) -> Any:
    """A plain boto3 client with the same kind of credentials, to check results."""
    c = sts(900)
    return rgw.client("s3", c["access_key"], c["secret_key"], c["session_token"])


def _file(path: Path, size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB pattern
    data = (block * (size // len(block) + 1))[:size]
    # make every MiB distinct so a misplaced part is caught
    data = b"".join(
        data[i : i + MiB][:-8] + i.to_bytes(8, "big")
        if len(data[i : i + MiB]) >= 8
        else data[i : i + MiB]
        for i in range(0, size, MiB)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _composite(data: bytes, part_size: int) -> str:
    """S3's composite SHA-256 of ``data`` in ``part_size`` parts: ``<hex>-<parts>``."""
    parts = [
        hashlib.sha256(data[i : i + part_size]).digest() for i in range(0, len(data), part_size)
    ]
    return f"{hashlib.sha256(b''.join(parts)).hexdigest()}-{len(parts)}"


def _get(admin: Any, full_key: str) -> bytes:
    return admin.get_object(Bucket=BUCKET, Key=full_key)["Body"].read()


def _uploads(admin: Any) -> list[dict[str, Any]]:
    return admin.list_multipart_uploads(Bucket=BUCKET, Prefix=PREFIX).get("Uploads", [])


def _http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --------------------------------------------------------------------------
# uploads
# --------------------------------------------------------------------------
def test_upload_small_file(ws: Workspace, admin: Any, tmp_path: Path) -> None:
    data = _file(tmp_path / "report.json", 1000)
    seen: list[tuple[int, int | None]] = []
    res = ws.upload(tmp_path / "report.json", "docs/", progress=lambda d, t: seen.append((d, t)))
    assert isinstance(res, UploadResult)
    assert res.key == "docs/report.json"
    assert res.uri == f"s3://{BUCKET}/{PREFIX}docs/report.json"
    assert res.size == 1000
    assert res.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert res.etag == hashlib.md5(data).hexdigest()  # noqa: S324
    head = admin.head_object(Bucket=BUCKET, Key=f"{PREFIX}docs/report.json")
    assert head["ContentType"] == "application/json"
    assert head["Metadata"] == {"sha256": hashlib.sha256(data).hexdigest()}
    assert res.sha256 == hashlib.sha256(data).hexdigest()
    assert _get(admin, f"{PREFIX}docs/report.json") == data
    assert seen[-1] == (1000, 1000)


def test_upload_multipart_concurrent_parts(ws: Workspace, admin: Any, tmp_path: Path) -> None:
    data = _file(tmp_path / "big.bin", 13 * MiB, seed=1)
    seen: list[int] = []
    lock = threading.Lock()
    active = [0, 0]  # current, max concurrent part uploads
    original = _upload.UploadEngine.put_part

    def counting(self: Any, *a: Any) -> Any:
        with lock:
            active[0] += 1
            active[1] = max(active)
        try:
            time.sleep(0.2)  # keep parts overlapping so concurrency is visible
            return original(self, *a)
        finally:
            with lock:
                active[0] -= 1

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_upload.UploadEngine, "put_part", counting)
        res = ws.with_transfer_config(
            TransferConfig(part_size=5 * MiB, multipart_threshold=5 * MiB, part_concurrency=3)
        ).upload(
            tmp_path / "big.bin",
            "mp/big.bin",
            metadata={"run": "42"},
            progress=lambda d, t: seen.append(d),
        )
    assert isinstance(res, UploadResult)
    assert res.parts == 3
    assert active[1] >= 2
    assert res.etag.endswith("-3")  # from HeadObject: radosgw's Complete has no ETag
    assert res.checksum.startswith("sha256:") and res.checksum.endswith("-3")
    assert seen == sorted(seen) and seen[-1] == len(data)
    assert _get(admin, f"{PREFIX}mp/big.bin") == data
    head = admin.head_object(Bucket=BUCKET, Key=f"{PREFIX}mp/big.bin")
    # S3's composite SHA-256 and its part size, no whole-file SHA-256
    composite = _composite(data, 5 * MiB)
    assert head["Metadata"] == {
        "run": "42",
        "sha256-composite": composite,
        "sha256-part-size": str(5 * MiB),
    }
    assert res.checksum == f"sha256:{composite}" and res.sha256 is None
    assert _uploads(admin) == []
    assert not list((Path(os.environ["STS_BRIDGE_CACHE_DIR"]) / "uploads").glob("*.json"))


def test_multipart_file_changed_after_hashing_fails_and_aborts(
    ws: Workspace, admin: Any, tmp_path: Path
) -> None:
    src = tmp_path / "moving.bin"
    _file(src, 11 * MiB, seed=3)
    original = _upload.file_digests

    def then_rewrite(fd: int, size: int, part_size: int) -> Any:
        digests = original(fd, size, part_size)
        with open(src, "r+b") as f:  # same size, other bytes in part 2
            f.seek(6 * MiB)
            f.write(b"changed!")
        return digests

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_upload, "file_digests", then_rewrite)
        with pytest.raises(TransferError, match="changed while it was being uploaded"):
            ws.with_transfer_config(
                TransferConfig(part_size=5 * MiB, multipart_threshold=5 * MiB)
            ).upload(
                src,
                "mp/moving.bin",
            )
    assert _uploads(admin) == []
    with pytest.raises(Exception, match=r"404|Not Found"):
        admin.head_object(Bucket=BUCKET, Key=f"{PREFIX}mp/moving.bin")


def test_upload_directory_include_exclude(ws: Workspace, admin: Any, tmp_path: Path) -> None:
    root = tmp_path / "scene"
    _file(root / "a.tif", 10)
    _file(root / "sub" / "b.tif", 20)
    _file(root / "sub" / "deep" / "c.tif", 30)
    _file(root / "sub" / "notes.txt", 5)
    _file(root / "tmp" / "d.tif", 5)
    res = ws.upload_directory(root, include=["*.tif"], exclude=["tmp/*"])
    assert [r.key for r in res] == ["scene/a.tif", "scene/sub/b.tif", "scene/sub/deep/c.tif"]
    with pytest.raises(TransferError, match="is a directory"):
        ws.upload(root, "copy")  # one object per upload(): a folder is refused
    with pytest.raises(TransferError, match="is not a directory"):
        ws.upload_directory(root / "a.tif", "copy")
    res2 = ws.upload_directory(root, "copy", include=["sub/*"])
    assert sorted(r.key for r in res2) == [
        "copy/sub/b.tif",
        "copy/sub/deep/c.tif",
        "copy/sub/notes.txt",
    ]
    keys = sorted(o.key for o in ws.list("scene/"))
    assert keys == ["scene/a.tif", "scene/sub/b.tif", "scene/sub/deep/c.tif"]


class _Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(min(n, 100_000) if n > 0 else n)  # short reads, like a pipe


def test_upload_stream_unknown_length(ws: Workspace, admin: Any) -> None:
    data = os.urandom(11 * MiB)
    res = ws.with_transfer_config(TransferConfig(part_size=5 * MiB)).upload(
        _Unseekable(data), "streams/s.bin"
    )
    assert isinstance(res, UploadResult)
    assert res.parts == 3 and res.size == len(data)
    assert _get(admin, f"{PREFIX}streams/s.bin") == data
    # a stream's size is not known ahead (and its parts are held in memory):
    # by default it is cut in 8 MiB parts, whatever its length
    longer = os.urandom(17 * MiB)
    res = ws.upload(_Unseekable(longer), "streams/default.bin")
    assert isinstance(res, UploadResult) and res.parts == 3
    assert _get(admin, f"{PREFIX}streams/default.bin") == longer
    small = ws.upload(b"tiny", "streams/tiny.txt")
    assert isinstance(small, UploadResult)
    assert small.parts == 0 and _get(admin, f"{PREFIX}streams/tiny.txt") == b"tiny"
    with pytest.raises(InvalidKeyError):
        ws.upload(io.BytesIO(b"x"))


def test_server_verifies_the_payload_sha256(ws: Workspace) -> None:
    engine = _upload.UploadEngine(
        ws,
        TransferConfig(part_concurrency=1, part_size=5 * MiB, multipart_threshold=5 * MiB),
        resumable=False,
    )
    with pytest.raises(StorageError, match="XAmzContentSHA256Mismatch") as refused:
        engine.put(PREFIX + "lie.bin", b"body", hashlib.sha256(b"other").hexdigest())
    assert refused.value.status == 400 and refused.value.key == "lie.bin"
    engine.close()


def test_failed_multipart_upload_is_aborted(ws: Workspace, admin: Any, tmp_path: Path) -> None:
    _file(tmp_path / "fail.bin", 11 * MiB)
    original = _upload.UploadEngine.put_part

    def failing(self: Any, full_key: str, upload_id: str, number: int, *rest: Any) -> Any:
        if number == 2:
            raise OSError("disk on fire")
        return original(self, full_key, upload_id, number, *rest)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_upload.UploadEngine, "put_part", failing)
        with pytest.raises(TransferError, match="disk on fire"):
            ws.with_transfer_config(
                TransferConfig(part_size=5 * MiB, multipart_threshold=1)
            ).upload(
                tmp_path / "fail.bin",
                "fail.bin",
            )
    assert _uploads(admin) == []
    assert not list((Path(os.environ["STS_BRIDGE_CACHE_DIR"]) / "uploads").glob("*.json"))
    with pytest.raises(ObjectNotFoundError):
        ws.download("fail.bin", tmp_path / "out")


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from dataclasses import dataclass
    from sts_bridge.s3 import upload as _upload
    from sts_bridge.s3.transfers import TransferEngine

    @dataclass(frozen=True)
    class Creds:
        access_key: str
        secret_key: str
        token: str
        expiry: None = None

    class WS:
        bucket, prefix, region, addressing_style, verify = (
            sys.argv[2], sys.argv[3], "us-east-1", "path", True)
        endpoint_url = sys.argv[1]
        creds = Creds(os.environ["AK"], os.environ["SK"], os.environ["TK"])
        def credentials(self): return self.creds
        def credentials_for(self, min_lifetime): return self.creds
        def s3_client(self):
            import boto3
            from botocore.config import Config
            return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                aws_access_key_id=self.creds.access_key,
                aws_secret_access_key=self.creds.secret_key,
                aws_session_token=self.creds.token,
                config=Config(s3={"addressing_style": "path"},
                              request_checksum_calculation="when_required"))

    original = _upload.UploadEngine.put_part
    def put_part(self, full_key, upload_id, number, *rest):
        result = original(self, full_key, upload_id, number, *rest)
        if number == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # like a crash or an OOM kill
        return result
    _upload.UploadEngine.put_part = put_part
    from sts_bridge.s3.config import TransferConfig
    config = TransferConfig(part_size=5 * 1024 * 1024, part_concurrency=1)
    TransferEngine(WS(), config).upload(sys.argv[4], sys.argv[5])
    """
)


def test_kill_9_then_resume_uploads_only_missing_parts(
    ws: Workspace, admin: Any, tmp_path: Path
) -> None:
    data = _file(tmp_path / "resume.bin", 17 * MiB, seed=7)  # 4 parts of 5 MiB
    creds = ws.credentials()
    env = {
        **os.environ,
        "AK": creds.access_key,
        "SK": creds.secret_key,
        "TK": creds.token or "",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLER,
            ws.endpoint_url,
            BUCKET,
            PREFIX,
            str(tmp_path / "resume.bin"),
            "resume.bin",
        ],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    uploads = [u for u in _uploads(admin) if u["Key"] == PREFIX + "resume.bin"]
    assert len(uploads) == 1
    upload_id = uploads[0]["UploadId"]
    state_files = list((Path(os.environ["STS_BRIDGE_CACHE_DIR"]) / "uploads").glob("*.json"))
    assert len(state_files) == 1
    assert state_files[0].stat().st_mode & 0o777 == 0o600
    stored = admin.list_parts(Bucket=BUCKET, Key=PREFIX + "resume.bin", UploadId=upload_id)
    assert [p["PartNumber"] for p in stored["Parts"]] == [1, 2]

    # a stored part that does not match the file is uploaded again
    admin.upload_part(
        Bucket=BUCKET,
        Key=PREFIX + "resume.bin",
        UploadId=upload_id,
        PartNumber=1,
        Body=b"x" * (5 * MiB),
    )

    sent: list[int] = []
    original = _upload.UploadEngine.put_part

    def recording(self: Any, full_key: str, uid: str, number: int, *rest: Any) -> Any:
        assert uid == upload_id
        sent.append(number)
        return original(self, full_key, uid, number, *rest)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_upload.UploadEngine, "put_part", recording)
        # the default config would cut 17 MiB in 8 MiB parts: the resumed
        # upload keeps the 5 MiB parts of its record
        res = ws.upload(tmp_path / "resume.bin", "resume.bin")
    assert isinstance(res, UploadResult)
    assert sorted(sent) == [1, 3, 4]
    assert res.resumed_parts == 1 and res.parts == 4
    assert _get(admin, PREFIX + "resume.bin") == data
    # the resumed upload records the composite its first run computed: the file's
    head = admin.head_object(Bucket=BUCKET, Key=PREFIX + "resume.bin")
    assert head["Metadata"] == {
        "sha256-composite": _composite(data, 5 * MiB),
        "sha256-part-size": str(5 * MiB),
    }
    assert res.checksum == f"sha256:{_composite(data, 5 * MiB)}"
    assert _uploads(admin) == []
    assert not list((Path(os.environ["STS_BRIDGE_CACHE_DIR"]) / "uploads").glob("*.json"))


# --------------------------------------------------------------------------
# credentials the store refuses are replaced once, on both request paths
# --------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["signed requests (upload, download)", "botocore (list)"])
def test_refused_credentials_are_replaced_once(
    rgw: RadosGateway, sts: Any, admin: Any, tmp_path: Path, path: str
) -> None:
    ws, fetched = _workspace_first_refused(rgw, sts)
    if path.startswith("signed"):
        ws.upload(b"after a refusal", "refused/x.txt")
        assert _get(admin, f"{PREFIX}refused/x.txt") == b"after a refusal"
        assert ws.download("refused/x.txt", tmp_path / "x").read_bytes() == b"after a refusal"
    else:
        admin.put_object(Bucket=BUCKET, Key=f"{PREFIX}refused/y.txt", Body=b"y")
        assert "refused/y.txt" in [o.key for o in ws.list("refused/")]
    assert len(fetched) == 2  # the refused set, then one new set for everything after


# --------------------------------------------------------------------------
# refused keys never reach the network
# --------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a\\b", "a/./b", "x\n", ""])
def test_refused_keys_make_no_request(
    rgw: RadosGateway, sts: Any, tmp_path: Path, key: str, calls: list[str]
) -> None:
    ws = _workspace(rgw, sts)
    (tmp_path / "f").write_bytes(b"x")
    attempts: list[Callable[[], Any]] = [
        lambda: ws.upload(tmp_path / "f", key),
        lambda: ws.upload(io.BytesIO(b"x"), key),
        lambda: ws.download(key, tmp_path / "o"),
        lambda: ws.delete(key),
        lambda: ws.presign(key),
        lambda: ws.presign_many(["ok.txt", key]),
    ]
    if key:
        attempts.append(lambda: ws.list(key + "/../x").__next__())
        attempts.append(lambda: ws.delete(key, recursive=True))
    for attempt in attempts:
        with pytest.raises(InvalidKeyError):
            attempt()
    assert calls == []


# --------------------------------------------------------------------------
# presigned URLs used by plain HTTP
# --------------------------------------------------------------------------
def test_presigned_put_get_head_delete(ws: Workspace) -> None:
    key = "shared/hello world+ü~.txt"
    put = ws.presign(key, "PUT", 600)
    assert put.method == "PUT" and put.key == key
    assert _http("PUT", put.url, b"hello via presigned PUT")[0] == 200
    status, body = _http("GET", ws.presign(key, expires_in=600).url)
    assert (status, body) == (200, b"hello via presigned PUT")
    assert _http("HEAD", ws.presign(key, "HEAD", 600).url)[0] == 200
    many = ws.presign_many([key, "shared/missing"], expires_in=timedelta(minutes=5))
    assert _http("GET", many[1].url)[0] == 404
    assert _http("DELETE", ws.presign(key, "DELETE", 600).url)[0] == 204
    assert _http("GET", many[0].url)[0] == 404
    # outside the session policy's prefix: signed fine, refused by the server
    tampered = many[0].url.replace(f"/{PREFIX}shared/", "/other/")
    assert _http("GET", tampered)[0] == 403


def test_presign_clamped_to_credentials_life(rgw: RadosGateway, sts: Any) -> None:
    ws = _workspace(rgw, sts, duration=4)
    ws.upload(b"short-lived", "clamp.txt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        url = ws.presign("clamp.txt", expires_in=3600)
    assert [w.category for w in caught] == [PresignClampedWarning]
    creds = ws.credentials_for(0)
    assert creds.expiry is not None
    assert url.expires_at <= creds.expiry
    # the URL says the clamped life: at most the 4 s the credentials had, and
    # it ends when expires_at says (bounded by meaning, not by the clock)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url.url).query)
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
    life = int(query["X-Amz-Expires"][0])
    assert 1 <= life <= 4
    assert signed_at.replace(tzinfo=timezone.utc) + timedelta(seconds=life) == url.expires_at
    assert _http("GET", url.url) == (200, b"short-lived")
    time.sleep(max(0.0, (url.expires_at - datetime.now(timezone.utc)).total_seconds()) + 1.5)
    assert _http("GET", url.url)[0] == 403


# --------------------------------------------------------------------------
# download, list, delete
# --------------------------------------------------------------------------
def test_download(ws: Workspace, tmp_path: Path) -> None:
    data = os.urandom(6 * MiB + 3)
    ws.upload(data, "dl/data.bin")
    seen: list[tuple[int, int | None]] = []
    out = ws.download(
        "dl/data.bin", f"{tmp_path / 'd'}/", progress=lambda d, t: seen.append((d, t))
    )
    assert out == tmp_path / "d" / "data.bin"
    assert out.read_bytes() == data
    assert seen[-1] == (len(data), len(data))
    out2 = ws.download("dl/data.bin", tmp_path / "renamed.bin")
    assert out2.read_bytes() == data
    with pytest.raises(ObjectNotFoundError) as missing:
        ws.download("dl/nope.bin", tmp_path)
    assert not isinstance(missing.value, ApiError)  # the store's answer, not the API's
    assert missing.value.key == "dl/nope.bin" and PREFIX not in str(missing.value)


def test_list_paging_and_delete_prefix(ws: Workspace, admin: Any, calls: list[str]) -> None:
    names = [f"many/{i:03d}.txt" for i in range(25)] + ["many/sub/x.txt", "many-not/y.txt"]
    for n in names:
        ws.upload(n.encode(), n)
    calls_before = calls.count("s3_client")
    listed = list(ws.list("many/", page_size=7))
    assert [o.key for o in listed] == sorted(n for n in names if n.startswith("many/"))
    assert all(o.size == len(o.key) for o in listed)
    assert calls.count("s3_client") == calls_before + 1
    shallow = list(ws.list("many/", recursive=False, page_size=10))
    assert [o.key for o in shallow if o.is_prefix] == ["many/sub/"]
    assert len([o for o in shallow if not o.is_prefix]) == 25

    with pytest.raises(ObjectNotFoundError, match="folder"):
        ws.delete("many")
    assert ws.delete("many", recursive=True) == 26
    assert list(ws.list("many/")) == []
    assert [o.key for o in ws.list("many-not/")] == ["many-not/y.txt"]  # not a sibling prefix
    assert ws.delete("many-not/y.txt") == 1
    with pytest.raises(ObjectNotFoundError):
        ws.delete("many-not/y.txt")


def test_upload_to_workspace_with_object(ws: Workspace, admin: Any) -> None:
    res = upload_to_workspace(b"one call", "one/call.txt", workspace=ws)
    assert isinstance(res, UploadResult)
    assert _get(admin, f"{PREFIX}one/call.txt") == b"one call"


# --------------------------------------------------------------------------
# the CLI commands (main(argv) with the real Workspace)
# --------------------------------------------------------------------------
@pytest.fixture
def cli(ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    from sts_bridge.cli import main

    # the real Workspace over radosgw's STS; how the CLI builds one from the
    # API is test_cli_end_to_end's (on the whole platform)
    current = {"ws": ws}
    monkeypatch.setattr("sts_bridge.cli._workspace.open_workspace", lambda args: current["ws"])

    def run(*argv: str) -> tuple[int, str, str]:
        status = main(list(argv))
        out, err = capsys.readouterr()
        return int(status), out, err

    run.current = current  # type: ignore[attr-defined]
    return run


def test_cli_upload_ls_download_presign_rm(cli: Any, tmp_path: Path, admin: Any) -> None:
    root = tmp_path / "tree"
    _file(root / "one.txt", 11)
    _file(root / "two" / "three.txt", 22)
    status, out, err = cli("upload", str(root), "--to", "cli/", "--json")
    assert status == 0, err
    doc = json.loads(out)
    assert sorted(d["key"] for d in doc) == ["cli/one.txt", "cli/two/three.txt"]
    assert err == ""  # no progress bar when stderr is not a TTY

    status, out, _ = cli("ls", "cli/")
    assert status == 0
    lines = out.splitlines()
    assert any(line.endswith("cli/one.txt") and line.split()[0] == "11" for line in lines)
    assert any("PRE" in line and line.endswith("cli/two/") for line in lines)
    status, out, _ = cli("ls", "cli/", "--recursive", "--json")
    assert sorted(json.loads(line)["key"] for line in out.splitlines()) == [
        "cli/one.txt",
        "cli/two/three.txt",
    ]

    status, out, _ = cli("download", "cli/two/three.txt", str(tmp_path / "dl") + "/")
    assert status == 0
    assert Path(out.strip()).read_bytes() == (root / "two" / "three.txt").read_bytes()

    status, out, err = cli("presign", "cli/one.txt", "cli/two/three.txt", "--expires-in", "10m")
    assert status == 0 and err == ""
    urls = out.splitlines()
    assert len(urls) == 2
    assert _http("GET", urls[0]) == (200, (root / "one.txt").read_bytes())

    # not a TTY and no --yes: refused, nothing deleted
    status, _, err = cli("rm", "cli", "--recursive")
    assert status == 2 and "--yes" in err
    assert len(list(admin.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "cli/")["Contents"])) == 2
    status, out, _ = cli("rm", "cli", "--recursive", "--yes")
    assert status == 0 and "deleted 2" in out
    status, _, err = cli("rm", "cli/one.txt")
    assert status == 6 and "sts-bridge: error:" in err


def test_cli_refuses_bad_key_and_notes_clamping(
    cli: Any, rgw: RadosGateway, sts: Any, tmp_path: Path
) -> None:
    status, out, err = cli("presign", "../escape")
    assert status == 2 and out == "" and "'..' segment" in err
    cli.current["ws"] = _workspace(rgw, sts, duration=30)
    status, out, err = cli("presign", "x.txt", "--expires-in", "2h", "--json")
    assert status == 0
    doc = json.loads(out)
    assert doc[0]["key"] == "x.txt" and "X-Amz-Expires=" in doc[0]["url"]
    assert "sts-bridge: note: presigned URL valid for" in err
    status, _, err = cli("presign", "x.txt", "--expires-in", "soon")
    assert status == 2 and "not a duration" in err


# --------------------------------------------------------------------------
# the own download path: ranged GETs, checks, no boto3 client
# --------------------------------------------------------------------------
def test_download_parallel_ranges_fresh_credentials_no_boto3(
    ws: Workspace, tmp_path: Path, calls: list[str]
) -> None:
    data = _file(tmp_path / "src.bin", 11 * MiB + 5, seed=3)
    res = ws.with_transfer_config(TransferConfig(part_size=5 * MiB, multipart_threshold=1)).upload(
        tmp_path / "src.bin",
        "rg/src.bin",
    )
    assert isinstance(res, UploadResult) and res.parts == 3
    calls.clear()
    seen: list[int] = []
    out = ws.with_transfer_config(TransferConfig(range_size=2 * MiB, range_concurrency=3)).download(
        "rg/src.bin",
        tmp_path / "out.bin",
        progress=lambda d, t: seen.append(d),
    )
    assert out.read_bytes() == data
    assert seen == sorted(seen) and seen[-1] == len(data)
    # 6 ranged GETs, each signed with a fresh credentials() snapshot; no boto3 client
    assert "s3_client" not in calls
    assert calls.count("credentials") >= 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out.bin", "src.bin"]


def test_download_single_part_md5_and_empty_object(
    ws: Workspace, tmp_path: Path, calls: list[str]
) -> None:
    small = os.urandom(3 * MiB + 1)
    ws.upload(small, "rg/small.bin")  # single PUT: the ETag is the MD5
    assert ws.download("rg/small.bin", tmp_path / "s.bin").read_bytes() == small
    # larger than one range and still single-part: MD5 read back from the file
    assert (
        ws.with_transfer_config(TransferConfig(range_size=1 * MiB))
        .download("rg/small.bin", tmp_path / "s2.bin")
        .read_bytes()
        == small
    )
    ws.upload(b"", "rg/empty.bin")
    out = ws.download("rg/empty.bin", tmp_path / "e.bin")
    assert out.exists() and out.read_bytes() == b""
    assert "s3_client" not in calls


@pytest.mark.parametrize(
    ("part_size", "how"), [(8 * MiB, "etag"), (1 * MiB, "etag"), (1 * MiB, "disk")]
)
def test_download_corruption_is_caught_and_leaves_no_file(
    ws: Workspace, tmp_path: Path, part_size: int, how: str
) -> None:
    ws.upload(os.urandom(3 * MiB), "rg/bad.bin")
    original = _download._pwrite_all

    def flip(fd: int, view: memoryview, offset: int, what: str) -> None:
        if offset == 0:
            view = memoryview(bytes([view[0] ^ 1]) + bytes(view[1:]))
        original(fd, view, offset, what)

    (tmp_path / "d").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        if how == "disk":  # the bytes on disk differ (checked by reading the file back)
            mp.setattr(_download, "_pwrite_all", flip)
        else:  # the bytes received are not what the ETag promises
            mp.setattr(_download, "_etag_md5", lambda etag, headers: ("f" * 32, ""))
        with pytest.raises(TransferError, match="ETag"):
            ws.with_transfer_config(TransferConfig(range_size=part_size)).download(
                "rg/bad.bin",
                tmp_path / "d" / "bad.bin",
            )
    assert list((tmp_path / "d").iterdir()) == []  # neither the file nor a temp file


def test_download_resumes_a_broken_range(ws: Workspace, tmp_path: Path) -> None:
    data = _file(tmp_path / "src.bin", 6 * MiB, seed=4)
    ws.with_transfer_config(TransferConfig(part_size=5 * MiB, multipart_threshold=1)).upload(
        tmp_path / "src.bin",
        "rg/broken.bin",
    )
    original = _download._pwrite_all
    broke: list[int] = []

    def breaking(fd: int, view: memoryview, offset: int, what: str) -> None:
        original(fd, view, offset, what)
        if offset >= 2 * MiB and not broke:
            broke.append(offset)
            raise ConnectionResetError("peer reset mid-range")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_download, "_pwrite_all", breaking)
        out = ws.with_transfer_config(
            TransferConfig(range_size=4 * MiB, range_concurrency=1)
        ).download(
            "rg/broken.bin",
            tmp_path / "o.bin",
        )
    assert broke and out.read_bytes() == data


def _file_system_takes_o_direct(folder: Path) -> bool:
    """Whether ``folder``'s file system takes an O_DIRECT write, asked by the test
    itself (never by the code under test): tmpfs refuses, ext4 and xfs take it."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    probe = folder / ".o-direct-probe"
    probe.write_bytes(b"")
    try:
        fd = os.open(probe, os.O_WRONLY | flag)
    except OSError:
        probe.unlink()
        return False
    page = mmap.mmap(-1, 4096)  # anonymous maps are page-aligned, as O_DIRECT wants
    try:
        os.pwrite(fd, page, 0)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        page.close()
        probe.unlink()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


@pytest.mark.parametrize("how", ["direct", "refused", "broken"])
def test_download_with_o_direct_odd_size(ws: Workspace, tmp_path: Path, how: str) -> None:
    """Large downloads write with O_DIRECT: aligned writes, the odd tail buffered, same bytes.

    ``refused``: the file system refuses a direct write (EINVAL): buffered for the rest.
    ``broken``: a connection breaks after a direct write: the range resumes.
    """
    data = _file(tmp_path / "src.bin", 5 * MiB + 777, seed=6)
    ws.with_transfer_config(TransferConfig(part_size=5 * MiB, multipart_threshold=1)).upload(
        tmp_path / "src.bin",
        "rg/direct.bin",
    )
    original = _download.DownloadEngine._write_direct
    direct_writes: list[int] = []
    broke: list[int] = []

    def spy(dfd: int, fd: int, view: memoryview, pos: int, what: str, direct: Any) -> None:
        assert pos % _download._DIRECT_ALIGN == 0 and len(view) % _download._DIRECT_ALIGN == 0
        direct_writes.append(pos)
        original(dfd, fd, view, pos, what, direct)
        if how == "broken" and pos >= 2 * MiB and not broke:
            broke.append(pos)
            raise ConnectionResetError("peer reset mid-range")

    real_pwrite = os.pwrite
    refused: list[int] = []

    def pwrite(fd: int, data: Any, offset: int) -> int:
        import fcntl

        if fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0):
            refused.append(offset)
            raise OSError(22, "Invalid argument")
        return real_pwrite(fd, data, offset)

    fds = _open_fds()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_download.DownloadEngine, "_write_direct", staticmethod(spy))
        if how == "refused":
            mp.setattr(os, "pwrite", pwrite)
        out = ws.with_transfer_config(
            TransferConfig(range_size=2 * MiB, range_concurrency=2, direct_io_min_size=0)
        ).download(
            "rg/direct.bin",
            tmp_path / "o.bin",
        )
    assert out.read_bytes() == data
    assert _open_fds() == fds  # the O_DIRECT descriptor is closed too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "o.bin", "src.bin"]
    if _file_system_takes_o_direct(tmp_path):
        assert direct_writes  # where O_DIRECT works, a large download uses it
        if how == "refused":
            assert 1 <= len(refused) <= 2  # given up after the first refusal (2 threads)
        if how == "broken":
            assert broke
    else:
        assert direct_writes == []  # and where it does not, it writes buffered


def test_small_downloads_stay_buffered(tmp_path: Path) -> None:
    """Only a large download whose ranges are aligned asks for O_DIRECT (on a real file)."""
    direct = getattr(os, "O_DIRECT", 0)
    min_size = 64 * MiB
    if not direct:
        pytest.skip("no O_DIRECT on this platform: every download is buffered")
    assert TransferConfig().direct_io_min_size is None  # O_DIRECT only when asked for
    part = tmp_path / "download.part"
    part.write_bytes(b"")
    asked: list[bool] = []
    real_open = os.open

    def recording(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        asked.append(bool(flags & direct))
        return real_open(path, flags, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "open", recording)
        small = _download.open_direct(part, min_size - 1, 16 * MiB, min_size)
        unaligned = _download.open_direct(part, 1 << 40, 16 * MiB + 1, min_size)
        never = _download.open_direct(part, 1 << 40, 16 * MiB, None)
        large = _download.open_direct(part, 1 << 40, 16 * MiB, min_size)  # the control
    if large is not None:
        os.close(large)
    assert (small, unaligned, never) == (None, None, None)
    assert asked == [True]  # only the large aligned download tried O_DIRECT
    # and got it, where the file system takes O_DIRECT
    assert (large is not None) == _file_system_takes_o_direct(tmp_path)


def _interrupted_upload(
    ws: Workspace, src: Path, key: str, data: bytes, *, composite: str | None = None
) -> tuple[Any, str, Path]:
    """What a process killed during the upload of ``src`` (``data``) to ``key``
    leaves: a multipart upload of 5 MiB parts with part 1 stored, and its resume
    state file (version 3 recording ``composite`` when given, else version 1).
    Returns the engine (open: the caller closes it), the upload id and the state file."""
    full = PREFIX + key
    engine = _upload.UploadEngine(
        ws,
        TransferConfig(part_concurrency=1, part_size=5 * MiB, multipart_threshold=1),
        resumable=True,
    )
    spec = _upload.UploadSpec(src, None, key, full, len(data), "application/octet-stream", {})
    if composite is None:
        upload_id = engine.create_multipart(spec)
        state: dict[str, Any] = {"version": 1, "upload_id": upload_id, "part_size": 5 * MiB}
    else:
        upload_id = engine.create_multipart(spec, composite, 5 * MiB)
        state = {
            "version": 3,
            "upload_id": upload_id,
            "part_size": 5 * MiB,
            "composite_sha256": composite,
        }
    engine.put_part(full, upload_id, 1, data[: 5 * MiB])
    state.update(
        bucket=BUCKET,
        key=full,
        size=len(data),
        mtime_ns=src.stat().st_mtime_ns,
        source=str(src),
    )
    path = engine.state_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state))
    path.chmod(0o600)
    return engine, upload_id, path


def test_upload_and_resume_never_build_a_boto3_client(
    ws: Workspace, tmp_path: Path, admin: Any, calls: list[str]
) -> None:
    data = _file(tmp_path / "r.bin", 11 * MiB, seed=5)
    full = PREFIX + "nb/r.bin"
    # an interrupted upload (as a killed process leaves it), then resumed
    engine, upload_id, _ = _interrupted_upload(ws, tmp_path / "r.bin", "nb/r.bin", data)
    assert set(engine._list_parts(full, upload_id)) == {1}
    engine.close()
    calls.clear()
    res = ws.with_transfer_config(TransferConfig(part_size=5 * MiB, multipart_threshold=1)).upload(
        tmp_path / "r.bin",
        "nb/r.bin",
    )
    assert isinstance(res, UploadResult) and res.resumed_parts == 1 and res.parts == 3
    assert res.etag.endswith("-3")
    assert _get(admin, full) == data
    assert "s3_client" not in calls
    assert _uploads(admin) == []


def test_resume_refuses_an_upload_that_recorded_another_sha256(
    ws: Workspace, tmp_path: Path, admin: Any
) -> None:
    # A file rewritten with the same size and mtime after an interrupted upload:
    # the state file matches, but the upload records another SHA-256.
    data = _file(tmp_path / "s.bin", 11 * MiB, seed=6)
    full = PREFIX + "nb/s.bin"
    old = _composite(b"the file before" * MiB, 5 * MiB)
    engine, _, _ = _interrupted_upload(ws, tmp_path / "s.bin", "nb/s.bin", data, composite=old)
    engine.close()
    res = ws.with_transfer_config(TransferConfig(part_size=5 * MiB, multipart_threshold=1)).upload(
        tmp_path / "s.bin",
        "nb/s.bin",
    )
    assert isinstance(res, UploadResult) and res.resumed_parts == 0 and res.parts == 3
    head = admin.head_object(Bucket=BUCKET, Key=full)
    assert head["Metadata"]["sha256-composite"] == _composite(data, 5 * MiB)
    assert _get(admin, full) == data
    assert _uploads(admin) == []  # the old upload was aborted, not left behind


def test_resume_state_of_an_upload_aborted_since_starts_again(
    ws: Workspace, tmp_path: Path, admin: Any
) -> None:
    # The upload of the state file was aborted by someone else: ListParts says
    # NoSuchUpload, and the upload starts again without listing the bucket.
    data = _file(tmp_path / "g.bin", 11 * MiB, seed=7)
    full = PREFIX + "nb/g.bin"
    engine, upload_id, path = _interrupted_upload(ws, tmp_path / "g.bin", "nb/g.bin", data)
    engine.close()
    admin.abort_multipart_upload(Bucket=BUCKET, Key=full, UploadId=upload_id)
    res = ws.with_transfer_config(TransferConfig(part_size=5 * MiB, multipart_threshold=1)).upload(
        tmp_path / "g.bin",
        "nb/g.bin",
    )
    assert isinstance(res, UploadResult) and res.resumed_parts == 0 and res.parts == 3
    assert _get(admin, full) == data
    assert _uploads(admin) == []
    assert not path.exists()
