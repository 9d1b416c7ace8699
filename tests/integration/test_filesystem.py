"""workspace:// through fsspec and the data stack, against the local platform.

The short-lived platform issues 5-second tokens and STS credentials, so a
test that spans more than three lifetimes proves the credentials refresh
inside the filesystem (a snapshot dies at the first expiry: radosgw
answers AccessDenied).
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from source_variants import SourceVariant

from sts_bridge import Client
from sts_bridge.credentials.sources import resolve_workspace
from sts_bridge.errors import InvalidKeyError
from sts_bridge.interop.filesystem import WorkspaceFileSystem

pytestmark = pytest.mark.integration

SERVICE_WS = "gep-processing-results-a2s-service-workspace"


@pytest.fixture(autouse=True)
def fresh_filesystems() -> Iterator[None]:
    """Each test builds its own filesystems (fsspec caches instances per process,
    and every test runs against a platform of its own configuration)."""
    WorkspaceFileSystem.clear_instance_cache()
    yield
    WorkspaceFileSystem.clear_instance_cache()


def _base() -> str:
    return f"workspace://{SERVICE_WS}/fs-tests/{uuid.uuid4().hex}"


def test_one_filesystem_keeps_writing_over_more_than_three_lifetimes(
    short_lived_platform_env: dict[str, str], short_lived_platform: Any
) -> None:
    ws = Client.from_env().workspace(SERVICE_WS)
    fs = ws.filesystem()
    base = _base()
    lifetime = short_lived_platform.sts_duration
    short_lived_platform.reset_stats()
    deadline = time.monotonic() + 3.3 * lifetime
    written = 0
    while time.monotonic() < deadline and written < 500:
        fs.pipe_file(f"{base}/n/{written}", str(written).encode())
        assert fs.cat_file(f"{base}/n/{written}") == str(written).encode()
        written += 1
        time.sleep(0.1)
    exchanges = short_lived_platform.api_stats()["sts_exchanges"]
    assert exchanges >= 3, exchanges  # the credentials really were renewed ...
    assert written > 3 * exchanges  # ... but not per request
    assert len(fs.ls(f"{base}/n")) == written
    fs.rm(base, recursive=True)
    assert not fs.exists(f"{base}/n/0")


def test_xarray_zarr_with_dask_chunks_over_three_lifetimes(
    short_lived_platform_env: dict[str, str], short_lived_platform: Any
) -> None:
    np = pytest.importorskip("numpy")
    xr = pytest.importorskip("xarray")
    url = f"{_base()}/cube.zarr"
    lifetime = short_lived_platform.sts_duration
    rng = np.random.default_rng(12)
    full = xr.Dataset(
        {"t2m": (("time", "y", "x"), rng.random((8, 64, 64)).astype("float32"))},
        coords={"time": np.arange(8), "y": np.arange(64), "x": np.arange(64)},
    ).chunk({"time": 2, "y": 32, "x": 32})
    short_lived_platform.reset_stats()
    started = time.monotonic()
    for step in range(4):  # one append per lifetime: four lifetimes in all
        part = full.isel(time=slice(2 * step, 2 * step + 2))
        if step == 0:
            part.to_zarr(url, mode="w", consolidated=False)
        else:
            part.to_zarr(url, append_dim="time", consolidated=False)
        time.sleep(max(0.0, started + (step + 1) * lifetime - time.monotonic()))
    back = xr.open_zarr(url, consolidated=False).load()
    xr.testing.assert_equal(back, full.compute())
    assert short_lived_platform.api_stats()["sts_exchanges"] >= 3
    WorkspaceFileSystem().rm(url, recursive=True)


def test_pandas_parquet_round_trip_and_dask_reads_it(platform_env: dict[str, str]) -> None:
    pd = pytest.importorskip("pandas")
    url = f"{_base()}/table.parquet"
    df = pd.DataFrame({"station": ["a", "b", "c"], "value": [1.5, 2.5, None]})
    df.to_parquet(url)
    pd.testing.assert_frame_equal(pd.read_parquet(url), df)
    dd = pytest.importorskip("dask.dataframe")  # Dask's readers take the URL unchanged
    back = dd.read_parquet(url).compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    WorkspaceFileSystem().rm(url)


def test_pyarrow_dataset_through_fsspec(platform_env: dict[str, str]) -> None:
    pa = pytest.importorskip("pyarrow")
    ds = pytest.importorskip("pyarrow.dataset")
    fs = WorkspaceFileSystem()
    base = _base().removeprefix("workspace://")
    table = pa.table({"year": [2024, 2024, 2025], "x": [1, 2, 3]})
    ds.write_dataset(table, f"{base}/ds", filesystem=fs, format="parquet", partitioning=["year"])
    back = ds.dataset(f"{base}/ds", filesystem=fs, format="parquet", partitioning=["year"])
    assert back.to_table().sort_by("x").to_pydict() == table.to_pydict()
    fs.rm(base, recursive=True)


def test_universal_pathlib_and_fsspec_open(platform_env: dict[str, str]) -> None:
    upath = pytest.importorskip("upath")
    import fsspec

    base = _base()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not explicitly implemented" fallback
        path = upath.UPath(f"{base}/notes/readme.txt")
    assert type(path).__name__ == "WorkspacePath"  # not silently a local path
    path.write_text("hello workspace")
    assert path.read_text() == "hello workspace"
    assert [p.name for p in path.parent.iterdir()] == ["readme.txt"]
    with fsspec.open(f"{base}/raw.bin", "wb") as f:
        f.write(b"\x00\x01" * 1000)
    with fsspec.open(f"{base}/raw.bin", "rb") as f:
        assert f.read() == b"\x00\x01" * 1000
    fs = WorkspaceFileSystem()
    assert fs.size(f"{base}/raw.bin") == 2000
    fs.rm(base, recursive=True)


@pytest.mark.parametrize(
    "path",
    ["../escape.txt", "a/../../b", "a//b", "./a", "a/./b", "/abs"],
)
def test_unsafe_keys_are_refused_through_fsspec(platform_env: dict[str, str], path: str) -> None:
    import fsspec

    url = f"workspace://{SERVICE_WS}/{path}"
    with pytest.raises(InvalidKeyError), fsspec.open(url, "wb") as f:
        f.write(b"x")
    with pytest.raises(InvalidKeyError):
        WorkspaceFileSystem().cat_file(url)


def test_a_pickled_filesystem_and_workspace_hold_no_secret(
    platform_env: dict[str, str], local_platform: Any
) -> None:
    client = Client.from_env()
    ws = client.workspace(SERVICE_WS)
    fs = ws.filesystem()
    base = _base()
    fs.pipe_file(f"{base}/x", b"x")  # credentials are live inside the filesystem
    sts = ws.credentials()
    secrets = {
        "client secret": platform_env["TERRAPI_CLIENT_SECRET"],
        "access token": client.credentials.token(),
        "STS access key": sts.access_key,
        "STS secret key": sts.secret_key,
        "STS session token": sts.token or "",
    }
    for name, obj in {"filesystem": fs, "workspace": ws}.items():
        data = pickle.dumps(obj)
        for what, secret in secrets.items():
            assert secret and secret.encode() not in data, f"{what} in the pickled {name}"
    # unpickled, they resolve the workspace again and work
    again = pickle.loads(pickle.dumps(fs))  # noqa: S301 - our own bytes
    assert again.cat_file(f"{base}/x") == b"x"
    assert pickle.loads(pickle.dumps(ws)).name == SERVICE_WS  # noqa: S301
    fs.rm(base, recursive=True)


def test_resolve_workspace_through_the_configuration_chain(
    platform_env: dict[str, str],
) -> None:
    source = resolve_workspace(SERVICE_WS)
    assert source.bucket == "gep-processing-results" and source.prefix == "a2s/"
    assert resolve_workspace(SERVICE_WS) is source  # once per process
    assert source.credentials().remaining() > 0


def test_reads_and_writes_of_bytes_take_one_request_each(
    platform_env: dict[str, str], local_platform: Any
) -> None:
    """cat_file / pipe_file (Zarr chunks, small objects) go through the SDK's signed
    requests: ranges as fsspec slices them, a missing key is FileNotFoundError, the
    whole object's SHA-256 is recorded for sync, and s3fs's listing cache follows."""
    import hashlib

    ws = Client.from_env().workspace(SERVICE_WS)
    fs = ws.filesystem()
    base = _base()
    fs.pipe_file(f"{base}/first", b"1")
    assert fs.ls(base, detail=False) == [f"{base}/first".removeprefix("workspace://")]
    data = bytes(range(256)) * 40
    fs.pipe_file(f"{base}/blob", data)
    assert len(fs.ls(base, detail=False)) == 2  # the cached listing was dropped
    assert fs.cat_file(f"{base}/blob") == data
    assert fs.cat_file(f"{base}/blob", start=100, end=300) == data[100:300]
    assert fs.cat_file(f"{base}/blob", start=10_000) == data[10_000:]
    assert fs.cat_file(f"{base}/blob", start=-7) == data[-7:]
    assert fs.cat_file(f"{base}/blob", start=5, end=-5) == data[5:-5]  # s3fs asks the size
    assert fs.cat_file(f"{base}/blob", start=len(data) + 10) == b""
    assert fs.cat_file(f"{base}/blob", start=50, end=50) == b""
    assert fs.cat_ranges([f"{base}/blob"] * 2, [0, 9], [3, 12]) == [data[0:3], data[9:12]]
    with pytest.raises(FileNotFoundError, match="missing"):
        fs.cat_file(f"{base}/missing")
    key = base.removeprefix(f"workspace://{SERVICE_WS}/") + "/blob"
    head = ws.s3_client().head_object(Bucket=ws.bucket, Key=ws.prefix + key)
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    fs.pipe_file(f"{base}/created", b"new", mode="create")  # s3fs's exclusive PUT
    assert fs.cat_file(f"{base}/created") == b"new"
    fs.rm(base, recursive=True)


def test_batches_of_small_writes_and_reads_go_through_the_sdks_requests(
    platform_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fs.pipe({...})`` of small objects: every one stored by the SDK's own PUT
    from the event loop (none handed to the threads' way), its SHA-256
    recorded (which s3fs does not), the answers in the order given, and
    s3fs's cached listing dropped; ``fs.cat([...])`` reads them back in one
    batch, each answer (or error) under its path."""
    import hashlib

    from sts_bridge.interop import filesystem

    handed: list[str] = []
    on_threads = filesystem._stored
    monkeypatch.setattr(
        filesystem, "_stored", lambda *item: handed.append(item[3]) or on_threads(*item)
    )
    ws = Client.from_env().workspace(SERVICE_WS)
    fs = ws.filesystem()
    base = _base()
    fs.pipe_file(f"{base}/first", b"1")
    assert len(fs.ls(base, detail=False)) == 1  # now cached
    blobs = {f"{base}/many-{i:02d}": bytes([i]) * (100 + i) for i in range(40)}
    answers = fs.pipe(blobs)
    assert handed == []
    assert [a["ETag"] for a in answers] == [hashlib.md5(b).hexdigest() for b in blobs.values()]  # noqa: S324
    assert len(fs.ls(base, detail=False)) == 41
    assert fs.cat(list(blobs)) == {p.removeprefix("workspace://"): b for p, b in blobs.items()}
    # fs.cat's batch answers as fsspec's: the first error raised, or each in its place
    some, missing = list(blobs)[:3], f"{base}/missing"
    asked = [*some, missing]
    stripped = [p.removeprefix("workspace://") for p in asked]
    with pytest.raises(FileNotFoundError, match="missing"):
        fs.cat(asked)
    got = fs.cat(asked, on_error="return")
    assert list(got) == sorted(stripped) and isinstance(got[stripped[-1]], FileNotFoundError)
    assert [got[p] for p in stripped[:3]] == [blobs[p] for p in some]
    assert fs.cat(asked, on_error="omit") == {
        p: blobs[a] for p, a in zip(stripped[:3], some, strict=True)
    }
    assert fs.cat(some[1]) == blobs[some[1]]
    # fsspec's batch_size=-1 (no limit of its own) writes every object too
    again = {f"{base}/again-{i}": bytes([i]) * 7 for i in range(5)}
    assert len(fs.pipe(again, batch_size=-1)) == 5 and fs.cat(list(again)) == {
        p.removeprefix("workspace://"): b for p, b in again.items()
    }
    client = ws.s3_client()
    for path, data in list(blobs.items())[::13]:
        key = ws.prefix + path.removeprefix(f"workspace://{SERVICE_WS}/")
        head = client.head_object(Bucket=ws.bucket, Key=key)
        assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    fs.rm(base, recursive=True)


def test_refused_reads_and_writes_are_permission_errors_in_one_sentence(
    platform_env: dict[str, str],
) -> None:
    ws = Client.from_env().workspace(SERVICE_WS)
    # a workspace whose credentials the store refuses (a wrong secret key)
    refused = dataclasses.replace(ws.credentials(), secret_key="not-the-secret")
    fs = WorkspaceFileSystem(SourceVariant(ws, credentials=refused))
    for attempt in (
        lambda: fs.cat_file(f"{SERVICE_WS}/fs-tests/x"),
        lambda: fs.pipe_file(f"{SERVICE_WS}/fs-tests/x", b"x"),
        lambda: fs.pipe({f"{SERVICE_WS}/fs-tests/x": b"x", f"{SERVICE_WS}/fs-tests/y": b"y"}),
    ):
        with pytest.raises(PermissionError) as info:
            attempt()
        message = str(info.value)
        # the batch's first failure: either of its two objects
        assert "\n" not in message and re.search(r"fs-tests/[xy]\b", message), message
        assert "not-the-secret" not in message


def test_the_fsspec_contract_s3fs_users_rely_on(platform_env: dict[str, str]) -> None:
    """exists / ls / info / modified / touch answer as s3fs does, in workspace terms."""
    import datetime as dt

    fs = WorkspaceFileSystem()
    base = _base().removeprefix("workspace://")
    # exists: a bool for any well-formed URL, the unknown workspace included
    assert fs.exists("workspace://no-such-workspace/x") is False
    assert fs.exists("workspace://no-such-workspace") is False
    assert fs.exists(f"workspace://{SERVICE_WS}") is True
    assert fs.exists(f"{base}/nothing") is False
    with pytest.raises(InvalidKeyError):
        fs.exists(f"workspace://{SERVICE_WS}/a/../b")  # not well-formed: an error, not "no"
    # errors are OSError subclasses naming the path the user gave
    with pytest.raises(FileNotFoundError, match="no-such-workspace"):
        fs.ls("workspace://no-such-workspace")
    with pytest.raises(FileNotFoundError) as missing:
        fs.info(f"{base}/nothing")
    assert missing.value.filename == f"{base}/nothing"
    # ls(""): the workspaces this principal may use
    assert SERVICE_WS in fs.ls("", detail=False)
    assert {"name": SERVICE_WS, "size": 0, "type": "directory"} in fs.ls("")
    # modified / created from the store
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=5)
    fs.pipe_file(f"{base}/dated.txt", b"x")
    modified = fs.modified(f"{base}/dated.txt")
    assert modified.tzinfo is not None and modified >= before
    assert fs.created(f"{base}/dated.txt") == modified
    with pytest.raises(IsADirectoryError):
        fs.modified(base)
    # touch: a new empty object; an existing one cannot be touched without truncating
    fs.touch(f"{base}/empty")
    assert fs.cat_file(f"{base}/empty") == b""
    with pytest.raises(ValueError, match="touching existing"):
        fs.touch(f"{base}/dated.txt", truncate=False)
    assert fs.cat_file(f"{base}/dated.txt") == b"x"
    with pytest.raises(IsADirectoryError):
        fs.open(base, "rb")
    fs.rm(base, recursive=True)


def test_an_empty_workspace_lists_as_empty(platform_env: dict[str, str]) -> None:
    ws = Client.from_env().workspace(SERVICE_WS)
    # the same workspace seen with a fresh prefix inside its own: nothing there yet
    empty = SourceVariant(ws, prefix=f"{ws.prefix}empty-{uuid.uuid4().hex}/")
    fs = WorkspaceFileSystem(empty, skip_instance_cache=True)
    assert fs.ls(f"workspace://{SERVICE_WS}") == []
    assert fs.ls(f"workspace://{SERVICE_WS}/", detail=False) == []
    with pytest.raises(FileNotFoundError):
        fs.ls(f"workspace://{SERVICE_WS}/no-such-folder")


def test_exclusive_creation_is_decided_by_the_store(platform_env: dict[str, str]) -> None:
    """pipe_file(mode="create") and open("xb") raise FileExistsError for an existing
    key (radosgw honours If-None-Match on PUT), and of many writers racing for one
    key exactly one wins."""
    import concurrent.futures

    fs = WorkspaceFileSystem()
    base = _base()
    fs.pipe_file(f"{base}/taken", b"first")
    with pytest.raises(FileExistsError):
        fs.pipe_file(f"{base}/taken", b"second", mode="create")
    with pytest.raises(FileExistsError):
        fs.open(f"{base}/taken", "xb")
    assert fs.cat_file(f"{base}/taken") == b"first"
    with fs.open(f"{base}/fresh", "xb") as f:
        f.write(b"mine")
    assert fs.cat_file(f"{base}/fresh") == b"mine"

    def race(n: int) -> int:
        try:
            fs.pipe_file(f"{base}/raced", str(n).encode(), mode="create")
            return n
        except FileExistsError:
            return -1

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        winners = [n for n in pool.map(race, range(8)) if n >= 0]
    assert len(winners) == 1
    assert fs.cat_file(f"{base}/raced") == str(winners[0]).encode()
    fs.rm(base, recursive=True)


@pytest.mark.parametrize("cache", ["blockcache", "simplecache", "filecache"])
def test_file_objects_are_the_workspace_filesystems_and_caches_work(
    platform_env: dict[str, str], tmp_path: Any, cache: str
) -> None:
    import fsspec

    fs = WorkspaceFileSystem()
    base = _base()
    with fs.open(f"{base}/plain.bin", "wb") as f:
        assert f.fs is fs and f.path == f"{base}/plain.bin".removeprefix("workspace://")
    url = f"{cache}::{base}/cached.bin"
    options = {cache: {"cache_storage": str(tmp_path / cache)}}
    data = bytes(range(256)) * 4096  # 1 MiB
    with fsspec.open(url, "wb", **options) as f:
        f.write(data)
    assert fs.cat_file(f"{base}/cached.bin") == data
    for _ in range(2):  # the second time from the local cache
        with fsspec.open(url, "rb", **options) as f:
            f.seek(1000)
            assert f.read(5000) == data[1000:6000]
    fs.rm(base, recursive=True)


def test_a_file_bigger_than_a_block_is_written_in_parts(platform_env: dict[str, str]) -> None:
    fs = WorkspaceFileSystem()
    base = _base()
    block = 5 * 2**20
    data = bytes(range(256)) * (3 * block // 256) + b"tail"
    with fs.open(f"{base}/parts.bin", "wb", block_size=block) as f:
        for start in range(0, len(data), 1_000_000):
            f.write(data[start : start + 1_000_000])
    assert fs.size(f"{base}/parts.bin") == len(data)
    assert fs.cat_file(f"{base}/parts.bin") == data
    with fs.open(f"{base}/parts.bin", "ab", block_size=block) as f:
        f.write(b"+more")
    assert fs.cat_file(f"{base}/parts.bin", start=-9) == b"tail+more"
    fs.rm(base, recursive=True)


def test_copies_go_through_the_client_where_the_platform_refuses_server_side_copies(
    platform_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The platform denies CopyObject to workspace credentials (x-amz-copy-source);
    cp copies by ranged GETs into one PUT or the parts of a multipart upload."""
    from sts_bridge.interop import filesystem

    ws = Client.from_env().workspace(SERVICE_WS)
    fs = ws.filesystem()
    base = _base()
    key = base.removeprefix(f"workspace://{SERVICE_WS}/")
    fs.pipe_file(f"{base}/small", b"small object")
    with pytest.raises(Exception, match="AccessDenied"):  # the refusal this test is about
        ws.s3_client().copy_object(
            Bucket=ws.bucket,
            Key=f"{ws.prefix}{key}/server-side",
            CopySource={"Bucket": ws.bucket, "Key": f"{ws.prefix}{key}/small"},
        )
    fs.cp(f"{base}/small", f"{base}/copied")
    assert fs.cat_file(f"{base}/copied") == b"small object"
    # a "big" object: smaller thresholds, so three parts of 5 MiB (the last shorter)
    monkeypatch.setattr(filesystem, "_SINGLE_PUT_BELOW", 6 * 2**20)
    monkeypatch.setattr(filesystem, "_BLOCK_SIZE", 5 * 2**20)
    data = bytes(range(256)) * (12 * 2**20 // 256)
    fs.pipe_file(f"{base}/big", data)
    fs.cp(f"{base}/big", f"{base}/big-copy")
    assert fs.cat_file(f"{base}/big-copy") == data
    head = ws.s3_client().head_object(Bucket=ws.bucket, Key=f"{ws.prefix}{key}/big-copy")
    assert head["ETag"].endswith('-3"')  # a multipart upload of three parts
    fs.rm(base, recursive=True)


def test_puts_of_big_data_go_through_the_upload_engine_and_leave_no_record(
    platform_env: dict[str, str], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """put_file and pipe_file of multipart sizes: the SDK's upload engine (the
    file's composite SHA-256 recorded for sync, ContentType from the file's
    name, Metadata, fsspec's callback told every byte); boto's own arguments
    (ContentDisposition) through s3fs's calls, s3fs's chunksize alone through
    an engine of that part size; every upload recorded while it
    runs (see tests/faults), and no record left once the calls returned."""
    from fsspec.callbacks import Callback

    from sts_bridge.interop import filesystem
    from sts_bridge.s3.upload_records import read_records, records_dir

    monkeypatch.setattr(filesystem, "_SINGLE_PUT_BELOW", 6 * 2**20)  # pipe_file's threshold
    ws = Client.from_env().workspace(SERVICE_WS)
    fs = ws.filesystem()
    base = _base()
    key = base.removeprefix(f"workspace://{SERVICE_WS}/")
    data = bytes(range(256)) * (17 * 2**20 // 256)
    local = tmp_path / "big.csv"
    local.write_bytes(data)

    def head(name: str) -> Any:
        return ws.s3_client().head_object(Bucket=ws.bucket, Key=f"{ws.prefix}{key}/{name}")

    told = Callback()
    fs.put_file(str(local), f"{base}/put.csv", callback=told, Metadata={"origin": "test"})
    assert (told.size, told.value) == (len(data), len(data))
    put = head("put.csv")
    assert put["ContentType"] == "text/csv" and put["Metadata"]["origin"] == "test"
    assert put["Metadata"]["sha256-composite"].endswith("-3")  # parts of 8, 8, 1 MiB
    fs.pipe_file(f"{base}/piped", data)
    assert head("piped")["ETag"].endswith('-3"')
    boto = {"ContentDisposition": "attachment", "chunksize": 5 * 2**20}
    fs.put_file(str(local), f"{base}/boto-put", **boto)
    fs.pipe_file(f"{base}/boto-piped", data, **boto)
    for name in ("boto-put", "boto-piped"):
        answer = head(name)
        assert answer["ContentDisposition"] == "attachment"
        assert answer["ETag"].endswith('-4"')  # parts of 5 MiB
    # s3fs's chunksize alone: the engine's own uploads, of that part size
    fs.put_file(str(local), f"{base}/chunked-put", chunksize=5 * 2**20, max_concurrency=2)
    fs.pipe_file(f"{base}/chunked-piped", data, chunksize=5 * 2**20)
    for name in ("chunked-put", "chunked-piped"):
        assert head(name)["ETag"].endswith('-4"')  # parts of 5 MiB
    for name in ("put.csv", "piped", "boto-put", "boto-piped", "chunked-put", "chunked-piped"):
        assert fs.cat_file(f"{base}/{name}") == data
    left = [r for r in read_records(records_dir(ws.cache_dir)) if r.key.startswith(ws.prefix + key)]
    assert left == []
    fs.rm(base, recursive=True)


def test_one_file_object_kept_open_across_three_lifetimes(
    short_lived_platform_env: dict[str, str], short_lived_platform: Any
) -> None:
    """A file being written sends a part in each lifetime; a file being read
    fetches a block in each: both with the credentials of the moment."""
    ws = Client.from_env().workspace(SERVICE_WS)
    fs = ws.filesystem()
    base = _base()
    block = 5 * 2**20
    lifetime = short_lived_platform.sts_duration
    parts = [bytes([n]) * block for n in range(4)]
    short_lived_platform.reset_stats()
    first = ws.credentials().expiry
    assert first is not None

    def wait_for_lifetime(n: int) -> None:
        while time.time() < first.timestamp() + (n - 1) * lifetime + 0.5:
            time.sleep(0.2)

    with fs.open(f"{base}/kept.bin", "wb", block_size=block) as f:
        for n, part in enumerate(parts):
            wait_for_lifetime(n)
            f.write(part)  # a full block: one part sent now
    assert short_lived_platform.api_stats()["sts_exchanges"] >= 3
    short_lived_platform.reset_stats()
    first = ws.credentials().expiry
    assert first is not None
    with fs.open(f"{base}/kept.bin", "rb", block_size=block, cache_type="none") as f:
        for n, part in enumerate(parts):
            wait_for_lifetime(n)
            f.seek(n * block)
            assert f.read(block) == part
    assert short_lived_platform.api_stats()["sts_exchanges"] >= 3
    fs.rm(base, recursive=True)
