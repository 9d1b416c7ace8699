"""duckdb, polars, geopandas and vector GDAL (pyogrio and fiona) on a workspace, each
round-tripping real data across more than three credential lifetimes in one
process, against the short-lived local platform (5 s STS credentials: a
snapshot dies at the first expiry, radosgw answers AccessDenied).

Every round writes new keys and reads them back, so each round makes signed
requests of its own (no tool can answer it from a cache).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sts_bridge import Client
from sts_bridge.interop.filesystem import WorkspaceFileSystem

pytestmark = pytest.mark.integration

SERVICE_WS = "gep-processing-results-a2s-service-workspace"
#: Rounds at most (the loop ends when three lifetimes after the first have been seen).
MAX_ROUNDS = 300


@pytest.fixture(autouse=True)
def fresh_filesystems() -> Iterator[None]:
    WorkspaceFileSystem.clear_instance_cache()
    yield
    WorkspaceFileSystem.clear_instance_cache()


@pytest.fixture
def workspace(short_lived_platform_env: dict[str, str]) -> Any:
    return Client.from_env().workspace(SERVICE_WS)


def across_three_lifetimes(
    platform: Any, workspace: Any, one_round: Callable[[int], None], pause: float = 0.3
) -> int:
    """Run ``one_round(n)`` until rounds ran in each of the three credential
    lifetimes after the first; returns the number of rounds. Checks that the
    credentials were renewed, but not per request."""
    platform.reset_stats()
    first = workspace.credentials().expiry
    assert first is not None
    lifetime = platform.sts_duration
    seen: set[int] = set()
    rounds = 0
    while rounds < MAX_ROUNDS and not {1, 2, 3} <= seen:
        seen.add(int((time.time() - first.timestamp()) // lifetime) + 1)
        one_round(rounds)
        rounds += 1
        time.sleep(pause)
    assert {1, 2, 3} <= seen, seen
    exchanges = platform.api_stats()["sts_exchanges"]
    assert exchanges >= 3, exchanges
    return rounds


def test_duckdb_reads_globs_and_copies_over_workspace_urls(
    short_lived_platform: Any, workspace: Any
) -> None:
    duckdb = pytest.importorskip("duckdb")
    fs = workspace.filesystem()
    con = duckdb.connect()
    con.register_filesystem(fs)
    base = workspace.url(f"duckdb/{uuid.uuid4().hex}")

    def one_round(n: int) -> None:
        # SQL built from this test's own numbers and URLs (S608 is about untrusted text)
        parquet, csv = f"{base}/parquet/{n}.parquet", f"{base}/csv/{n}.csv"
        con.sql(f"COPY (SELECT range AS i, {n} AS r FROM range(100)) TO '{parquet}'")  # noqa: S608
        con.sql(f"COPY (SELECT {n} AS r, 'x' AS s) TO '{csv}' (FORMAT csv)")
        read = con.sql(f"SELECT count(*), sum(i) FROM read_parquet('{parquet}')")  # noqa: S608
        assert read.fetchall() == [(100, 4950)]
        assert con.sql(f"SELECT r, s FROM read_csv('{csv}')").fetchall() == [(n, "x")]  # noqa: S608
        # globbing: every file written so far
        fs.invalidate_cache()
        glob = f"{base}/parquet/*.parquet"
        rounds = con.sql(f"SELECT count(DISTINCT r) FROM read_parquet('{glob}')")  # noqa: S608
        assert rounds.fetchall() == [(n + 1,)]

    across_three_lifetimes(short_lived_platform, workspace, one_round)
    fs.rm(base, recursive=True)


def test_polars_with_one_call_and_with_fsspec_file_objects(
    short_lived_platform: Any, workspace: Any
) -> None:
    pl = pytest.importorskip("polars")
    import fsspec

    from sts_bridge.interop.tool_credentials import polars_options

    options = polars_options(workspace)
    key = f"polars/{uuid.uuid4().hex}"
    first = pl.DataFrame({"round": [-1] * 5, "i": list(range(5))})
    first.write_parquet(workspace.s3_url(f"{key}/first.parquet"), **options)
    # one lazy scan, built before the first expiry and collected in every lifetime
    kept = pl.scan_parquet(workspace.s3_url(f"{key}/first.parquet"), cache=False, **options)

    def one_round(n: int) -> None:
        frame = pl.DataFrame({"round": [n] * 10, "i": list(range(10))})
        frame.write_parquet(workspace.s3_url(f"{key}/s3/{n:04d}.parquet"), **options)
        frame.write_csv(workspace.s3_url(f"{key}/csv/{n}.csv"), **options)
        assert pl.read_csv(workspace.s3_url(f"{key}/csv/{n}.csv"), **options).equals(frame)
        scan = pl.scan_parquet(workspace.s3_url(f"{key}/s3/*.parquet"), cache=False, **options)
        totals = scan.select(pl.len(), pl.col("round").n_unique()).collect()
        assert totals.row(0) == ((n + 1) * 10, n + 1)
        assert kept.collect().equals(first)
        # workspace:// through fsspec file objects, where polars takes them
        url = workspace.url(f"{key}/fsspec/{n}.parquet")
        with fsspec.open(url, "wb") as f:
            frame.write_parquet(f)
        with fsspec.open(url, "rb") as f:
            assert pl.read_parquet(f).equals(frame)

    across_three_lifetimes(short_lived_platform, workspace, one_round)
    workspace.filesystem().rm(workspace.url(key), recursive=True)


def test_geopandas_parquet_through_the_workspace_filesystem(
    short_lived_platform: Any, workspace: Any
) -> None:
    gpd = pytest.importorskip("geopandas")
    shapely = pytest.importorskip("shapely")
    fs = workspace.filesystem()
    base = workspace.url(f"geoparquet/{uuid.uuid4().hex}")

    def one_round(n: int) -> None:
        frame = gpd.GeoDataFrame(
            {"round": [n, n], "name": ["a", "b"]},
            geometry=[shapely.Point(n, 1), shapely.Point(2, n)],
            crs="EPSG:4326",
        )
        url = f"{base}/{n}.parquet"
        frame.to_parquet(url, filesystem=fs)  # geopandas hands pyarrow the filesystem
        back = gpd.read_parquet(url)  # fsspec resolves workspace:// by itself
        assert back.crs == frame.crs
        assert back.equals(frame)

    across_three_lifetimes(short_lived_platform, workspace, one_round)
    fs.rm(base, recursive=True)


VECTOR_FORMATS = {"gpkg": "GPKG", "geojson": "GeoJSON", "fgb": "FlatGeobuf"}


def vector_round_trips(
    gpd: Any, shapely: Any, gdal_ws: Any, stem: str, n: int, *, engine: str
) -> Any:
    """Round ``n``: a three-point frame written to ``stem.<ext>`` in each of
    VECTOR_FORMATS through geopandas' ``engine`` and read back whole; the frame."""
    frame = gpd.GeoDataFrame(
        {"name": ["a", "b", "c"], "round": [n] * 3},
        geometry=[shapely.Point(0, n), shapely.Point(1, 1), shapely.Point(n, 2)],
        crs="EPSG:4326",
    )
    for ext, driver in VECTOR_FORMATS.items():
        path = gdal_ws.path(f"{stem}.{ext}")
        frame.to_file(path, driver=driver, engine=engine)
        back = gpd.read_file(path, engine=engine).sort_values("name")
        assert list(back["name"]) == ["a", "b", "c"], ext
        assert list(back["round"]) == [n] * 3, ext
        assert back.geometry.reset_index(drop=True).equals(frame.geometry), ext
    return frame


def test_vector_formats_through_pyogrio_with_gdal_env(
    short_lived_platform: Any, workspace: Any
) -> None:
    gpd = pytest.importorskip("geopandas")
    shapely = pytest.importorskip("shapely")
    pyogrio = pytest.importorskip("pyogrio")
    from sts_bridge.interop.gdal import gdal_env

    key = f"vector/{uuid.uuid4().hex}"
    with gdal_env(workspace, rasterio_env=False) as gdal_ws:
        # pyogrio's own GDAL got the options (not only rasterio's)
        assert (
            pyogrio.get_gdal_config_option("AWS_S3_ENDPOINT")
            == (gdal_ws.options["AWS_S3_ENDPOINT"])
        )

        def one_round(n: int) -> None:
            vector_round_trips(gpd, shapely, gdal_ws, f"{key}/{n}", n, engine="pyogrio")

        across_three_lifetimes(short_lived_platform, workspace, one_round, pause=0.5)
    # the options are gone with the block
    assert pyogrio.get_gdal_config_option("AWS_CONTAINER_CREDENTIALS_FULL_URI") is None
    WorkspaceFileSystem().rm(workspace.url(key), recursive=True)


def test_vector_formats_through_fiona_with_gdal_env(
    short_lived_platform: Any, workspace: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpd = pytest.importorskip("geopandas")
    shapely = pytest.importorskip("shapely")
    fiona = pytest.importorskip("fiona")
    from fiona.env import get_gdal_config

    from sts_bridge.interop.gdal import gdal_env

    # A personal [default] with wrong keys: boto3 (which fiona brings in for
    # s3:// paths when its environment has no keys) and GDAL look there first.
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = AKIAHOSTILE\naws_secret_access_key = hostile\n"
    )
    monkeypatch.setenv("HOME", str(home))

    key = f"vector-fiona/{uuid.uuid4().hex}"
    with gdal_env(workspace, rasterio_env=False) as gdal_ws:
        # fiona's own GDAL got the options (a third copy, not pyogrio's or rasterio's)
        assert get_gdal_config("AWS_S3_ENDPOINT") == gdal_ws.options["AWS_S3_ENDPOINT"]

        def one_round(n: int) -> None:
            frame = vector_round_trips(gpd, shapely, gdal_ws, f"{key}/{n}", n, engine="fiona")
            # fiona directly, on an s3:// URL of an object GDAL has not read
            # yet (its /vsis3/ cache cannot answer)
            frame.to_file(gdal_ws.s3_url(f"{key}/{n}-s3.fgb"), driver="FlatGeobuf", engine="fiona")
            with fiona.open(gdal_ws.s3_url(f"{key}/{n}-s3.fgb")) as collection:
                assert sorted(f["properties"]["name"] for f in collection) == ["a", "b", "c"]

        across_three_lifetimes(short_lived_platform, workspace, one_round, pause=0.5)
    # the options are gone with the block
    assert get_gdal_config("AWS_CONTAINER_CREDENTIALS_FULL_URI") is None
    WorkspaceFileSystem().rm(workspace.url(key), recursive=True)


def test_obstore_store_in_one_call(short_lived_platform: Any, workspace: Any) -> None:
    obstore = pytest.importorskip("obstore")
    from sts_bridge.interop.tool_credentials import obstore_store

    store = obstore_store(workspace)
    key = f"obstore/{uuid.uuid4().hex}"

    def one_round(n: int) -> None:
        obstore.put(store, f"{key}/{n}.txt", f"payload {n}".encode())
        assert bytes(obstore.get(store, f"{key}/{n}.txt").bytes()) == f"payload {n}".encode()

    across_three_lifetimes(short_lived_platform, workspace, one_round)
    # keys are relative to the workspace prefix: the filesystem sees the same objects
    fs = workspace.filesystem()
    assert fs.cat_file(workspace.url(f"{key}/0.txt")) == b"payload 0"
    fs.rm(workspace.url(key), recursive=True)
