"""``sts_bridge.dask.share`` on real Dask processes against the 5-second platform.

A ``dask scheduler`` and two ``dask worker`` processes run with a clean
environment (no TERRAPI_*, an empty HOME of their own, no cache dir of the
user's): another machine as far as they can tell. The test process is the
Dask client and the user's side: it is logged in as alice (a refresh token,
5-second access tokens) and also holds the service client's secret in its
environment. A LocalCluster covers workers that join after ``share``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sts_bridge_devstack import lifeline
from sts_bridge_devstack.dask_tasks import (
    payload,
    worker_environment,
    write_objects,
    write_static_s3fs,
)

pytestmark = pytest.mark.integration

distributed = pytest.importorskip("distributed")

ALICE_WS = "gep-alice-private-workspace"
SERVICE_WS = "gep-processing-results-a2s-service-workspace"
DASK = Path(sys.executable).with_name("dask")
#: Dask retries of the writing tasks. This 2-core machine, shared with other
#: test suites, was seen to stall the scheduler and the workers for ~10 s at
#: once: longer than the 5 s lifetime of every credential, shared or not. A
#: task caught by such a stall fails with SharedCredentialsExpiredError and
#: its retry finds the next snapshot (a retry that fails again fails the test).
RETRIES = 2
#: Bounds of the scan of a worker's memory (bytes read per process, seconds).
SCAN_BYTES = 3 << 30


# ----------------------------------------------------------------- the fleet


@dataclass
class Fleet:
    address: str
    processes: list[subprocess.Popen[bytes]]
    home: Path


def _clean_env(home: Path) -> dict[str, str]:
    """What a process on another host would have: no TERRAPI_*, no STS_BRIDGE_*, no AWS_*."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home / "tmp"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    from sts_bridge_devstack.ports import free_port

    if not DASK.exists():
        pytest.fail(f"{DASK} is missing: run `make setup`")
    home = tmp_path_factory.mktemp("other-host-home")
    (home / "tmp").mkdir()
    env = _clean_env(home)
    logs = home / "logs"
    logs.mkdir()
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, *args: str) -> None:
        with open(logs / f"{name}.log", "wb") as log:
            processes.append(
                # its own group, ended with this process however it ends:
                # teardown kills everything in it
                lifeline.popen(
                    [str(DASK), *args],
                    env=env,
                    cwd=home,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    try:
        spawn(
            "scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port),
            "--no-dashboard", "--no-show",
        )  # fmt: skip
        for i in range(2):
            spawn(
                f"worker-{i}", "worker", address, "--host", "127.0.0.1", "--no-nanny",
                "--nthreads", "2", "--no-dashboard", "--name", f"far-{i}",
                "--local-directory", str(home / f"worker-{i}"),
            )  # fmt: skip
        with distributed.Client(address, timeout=30) as probe:
            probe.wait_for_workers(2, timeout=60)
        yield Fleet(address, processes, home)
    except BaseException:
        for path in sorted(logs.iterdir()):
            sys.stderr.write(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}\n")
        raise
    finally:
        for proc in reversed(processes):
            _kill_group(proc)


@pytest.fixture
def fleet_client(fleet: Fleet) -> Iterator[Any]:
    client = distributed.Client(fleet.address, timeout=30, set_as_default=False)
    try:
        yield client
    finally:
        client.close()


# ------------------------------------------------------------ the user's side


@dataclass
class UserLogin:
    """alice, logged in with a refresh token; remembers the tokens sampled from her login."""

    credentials: Any
    seen: set[str]

    def sample(self) -> None:
        token = self.credentials.valid_token()
        self.seen.update(t for t in (token.access_token, token.refresh_token) if t)


@pytest.fixture
def alice(short_lived_platform: Any, short_lived_platform_env: dict[str, str]) -> UserLogin:
    from sts_bridge.auth.device import DeviceCodeCredentials

    idp = short_lived_platform.idp
    password = short_lived_platform.users["alice"]

    def approve(auth: Any) -> None:
        threading.Thread(
            target=idp.approve_device, args=(auth.user_code, "alice", password), daemon=True
        ).start()

    creds = DeviceCodeCredentials(
        idp.issuer,
        idp.cli_client_id or "",
        scopes=("gep",),
        audience=idp.audience,
        leeway=2,
        prompt=approve,
    )
    creds.login()
    login = UserLogin(creds, set())
    login.sample()
    return login


@pytest.fixture
def alice_ws(alice: UserLogin, register_workspace: Callable[..., Any]) -> Any:
    """alice's workspace; workspace:// URLs in this process resolve to it (her login)."""
    from sts_bridge import Client
    from sts_bridge.interop.filesystem import WorkspaceFileSystem

    ws = Client(credentials=alice.credentials, cache=False).workspace(ALICE_WS)
    WorkspaceFileSystem.clear_instance_cache()  # none holding an earlier test's login
    register_workspace(ws)
    return ws


# ------------------------------------------------------------- memory scan


def scan_memory(pid: int, needles: dict[str, bytes]) -> tuple[set[str], int]:
    """Names of the ``needles`` found in the memory of ``pid`` that can hold data; bytes read.

    Read: every readable mapping that is writable or anonymous (heap, stacks,
    arenas, and the writable data of libraries); skipped: read-only file
    mappings (code and constants of libraries, identical to the files on
    disk). Bounded by :data:`SCAN_BYTES`, by what a worker can hold, not by
    the clock (a loaded machine only makes it slower); a bound that is hit
    fails the test (a partial scan proves nothing).
    """
    found: set[str] = set()
    overlap = max(len(n) for n in needles.values())
    scanned = 0
    regions: list[tuple[int, int]] = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            perms = fields[1]
            path = fields[5] if len(fields) > 5 else ""
            if not perms.startswith("r") or path in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
                continue
            if path and not path.startswith("[") and "w" not in perms:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            regions.append((start, end))
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end in regions:
            tail = b""
            offset = start
            while offset < end:
                size = min(8 << 20, end - offset)
                try:
                    mem.seek(offset)
                    chunk = mem.read(size)
                except OSError:
                    break  # an unreadable page (guard, device mapping): skip the region
                if not chunk:
                    break
                window = tail + chunk
                for name, needle in needles.items():
                    if name not in found and needle in window:
                        found.add(name)
                tail = window[-overlap:]
                offset += len(chunk)
                scanned += len(chunk)
                assert scanned <= SCAN_BYTES, f"worker {pid}: over {SCAN_BYTES} bytes mapped"
    return found, scanned


# ------------------------------------------------------------------ the tests


def _read_back(ws: Any, base_key: str, keys: list[str]) -> None:
    """Every byte of every object, read from this process (not the workers' word for it)."""
    s3 = ws.s3_client()

    def check(key: str) -> None:
        obj = s3.get_object(Bucket=ws.bucket, Key=f"{ws.prefix}{base_key}/{key}")
        assert obj["Body"].read() == payload(key), key

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check, keys))


def _delete(ws: Any, base_key: str) -> None:
    s3 = ws.s3_client()
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=ws.bucket, Prefix=f"{ws.prefix}{base_key}/"
    )
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.delete_object(Bucket=ws.bucket, Key=key), keys))


def test_fleet_writes_hundreds_of_objects_over_three_lifetimes_and_never_sees_the_login(
    fleet_client: Any,
    alice: UserLogin,
    alice_ws: Any,
    short_lived_platform: Any,
    short_lived_platform_env: dict[str, str],
) -> None:
    from sts_bridge.dask import share

    lifetime = short_lived_platform.sts_duration
    base_key = f"dask-fleet-{uuid.uuid4().hex}"
    base = f"workspace://{ALICE_WS}/{base_key}"
    assert fleet_client.run(worker_environment) == {
        w: [] for w in fleet_client.scheduler_info()["workers"]
    }
    written: list[str] = []
    workers_used: set[str] = set()
    with share(alice_ws, fleet_client) as handle:
        first_key = handle.last_pushed_access_key
        batch = 0
        next_sample = 0.0
        # more than three lifetimes (four pushed credential sets: the first and
        # three refreshes, counted, not timed) AND hundreds of objects, however
        # fast or loaded the machine is. The deadline only ends a run whose
        # refreshes never come: 20 lifetimes is far beyond the 3.x it takes.
        give_up = time.monotonic() + 20 * lifetime
        while (handle.pushes < 4 or len(written) < 300) and time.monotonic() < give_up:
            keys = [[f"b{batch}/t{t}/o{o}" for o in range(5)] for t in range(8)]
            futures = fleet_client.map(write_objects, [base] * 8, keys, pure=False, retries=RETRIES)
            for address, done in fleet_client.gather(futures):
                workers_used.add(address)
                written.extend(done)
            if time.monotonic() >= next_sample:
                alice.sample()  # her tokens live 5 s: one sample per lifetime sees each
                next_sample = time.monotonic() + lifetime / 2
            batch += 1
        assert handle.pushes >= 4, handle.pushes  # the first snapshot and 3+ refreshes
        last_key = handle.last_pushed_access_key
        assert last_key != first_key
        pids = fleet_client.run(os.getpid)

        # the scan: the client secret and every token of alice's are absent,
        # the STS access key id that the workers hold now is present
        alice.sample()
        needles = {
            "client secret": short_lived_platform_env["TERRAPI_CLIENT_SECRET"].encode(),
            **{f"alice token {i}": t.encode() for i, t in enumerate(sorted(alice.seen))},
            "sts access key id (must be found)": last_key.encode(),
        }
        for address, pid in pids.items():
            started = time.monotonic()
            found, scanned = scan_memory(pid, needles)
            print(f"scan of {address}: {scanned >> 20} MiB, {time.monotonic() - started:.1f} s")
            assert scanned > 10 << 20, (address, scanned)
            assert found == {"sts access key id (must be found)"}, (address, found)
    assert len(workers_used) == 2
    assert len(written) >= 300 and len(set(written)) == len(written)
    _read_back(alice_ws, base_key, written)
    _delete(alice_ws, base_key)


def test_xarray_writes_a_zarr_dataset_with_dask_chunks_on_the_fleet(
    fleet_client: Any, alice_ws: Any
) -> None:
    import dask.array as da
    import numpy as np
    import xarray as xr

    from sts_bridge.dask import share

    base_key = f"dask-zarr-{uuid.uuid4().hex}"
    url = f"workspace://{ALICE_WS}/{base_key}/cube.zarr"
    shape = (6, 200, 300)
    expected = np.arange(np.prod(shape), dtype="float64").reshape(shape) * 0.5
    cube = da.from_array(expected, chunks=(1, 100, 150))
    ds = xr.Dataset({"reflectance": (("time", "y", "x"), cube)}, coords={"time": np.arange(6)})
    with share(alice_ws, fleet_client):
        delayed = ds.to_zarr(url, mode="w", compute=False)
        fleet_client.compute(delayed, retries=RETRIES).result(timeout=120)
        processed = fleet_client.run(lambda: 1)
        assert len(processed) == 2
    back = xr.open_zarr(url)
    assert back["reflectance"].chunks is not None
    values = back["reflectance"].values
    assert values.tobytes() == expected.tobytes()
    assert back["time"].values.tolist() == list(range(6))
    _delete(alice_ws, base_key)


def test_static_storage_options_die_at_the_first_expiry_ours_do_not(
    fleet_client: Any, alice_ws: Any
) -> None:
    from sts_bridge.dask import share
    from sts_bridge.interop.tool_credentials import storage_options

    base_key = f"dask-side-by-side-{uuid.uuid4().hex}"
    with share(alice_ws, fleet_client):
        snapshot = storage_options(alice_ws)  # what the anchors copy to every worker
        options, snapshot_expiry = dict(snapshot), snapshot.expiry
        bucket_key = f"{alice_ws.bucket}/{alice_ws.prefix}{base_key}/static"
        ours = f"workspace://{ALICE_WS}/{base_key}"
        assert fleet_client.submit(write_static_s3fs, options, bucket_key + "-0", b"s").result()
        fleet_client.submit(write_objects, ours, ["ours-0"], pure=False).result()

        # past the snapshot's expiry: the static keys are dead, the shared ones are not
        assert snapshot_expiry is not None
        while time.time() < snapshot_expiry.timestamp() + 1:
            time.sleep(0.2)
        with pytest.raises(Exception) as static_failure:
            fleet_client.submit(
                write_static_s3fs, options, bucket_key + "-1", b"s", pure=False
            ).result()
        assert isinstance(static_failure.value, (PermissionError, OSError)), static_failure.value
        fleet_client.submit(write_objects, ours, ["ours-1"], pure=False).result()
    _read_back(alice_ws, base_key, ["ours-0", "ours-1"])
    _delete(alice_ws, base_key)


def test_when_the_client_goes_away_tasks_end_in_the_clear_error(
    fleet: Fleet, alice_ws: Any
) -> None:
    from sts_bridge.dask import share
    from sts_bridge.errors import SharedCredentialsExpiredError

    base_key = f"dask-gone-{uuid.uuid4().hex}"
    base = f"workspace://{ALICE_WS}/{base_key}"
    sharing = distributed.Client(fleet.address, timeout=30, set_as_default=False)
    handle = share(alice_ws, sharing)
    try:
        last = handle.last_pushed_expiry
        sharing.close()  # the notebook's kernel died: nobody refreshes any more
        with distributed.Client(fleet.address, timeout=30, set_as_default=False) as other:
            # until the last snapshot runs out, workers keep working with it
            other.submit(write_objects, base, ["before-expiry"], pure=False).result()
            while time.time() < last.timestamp():
                time.sleep(0.2)
            with pytest.raises(SharedCredentialsExpiredError) as info:
                other.submit(write_objects, base, ["after-expiry"], pure=False).result()
        assert "the credentials shared by the client expired" in str(info.value)
        assert info.value.hint and "share()" in info.value.hint
        assert not handle.sharing
    finally:
        handle.close()  # share() registered the workspace in this (the test) process too
    s3 = alice_ws.s3_client()
    listing = s3.list_objects_v2(Bucket=alice_ws.bucket, Prefix=f"{alice_ws.prefix}{base_key}/")
    assert [o["Key"].rsplit("/", 1)[1] for o in listing.get("Contents", [])] == ["before-expiry"]
    _read_back(alice_ws, base_key, ["before-expiry"])
    _delete(alice_ws, base_key)


def test_local_cluster_workers_that_join_later_get_the_workspace(
    alice_ws: Any, short_lived_platform: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sts_bridge.dask import share

    # the spawned workers inherit the environment: give them none of the user's
    for name in list(os.environ):
        if name.startswith(("TERRAPI_", "STS_BRIDGE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    lifetime = short_lived_platform.sts_duration
    base_key = f"dask-local-{uuid.uuid4().hex}"
    base = f"workspace://{ALICE_WS}/{base_key}"
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
            local_directory=str(tmp_path / "dask"),
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
        share(alice_ws, client),
    ):
        first = set(client.scheduler_info()["workers"])
        client.submit(write_objects, base, ["w0"], pure=False).result()
        # past one lifetime, then a worker that was not there when share() ran
        time.sleep(lifetime * 1.2)
        cluster.scale(2)
        client.wait_for_workers(2, timeout=60)
        (late,) = set(client.scheduler_info()["workers"]) - first
        done = client.submit(write_objects, base, ["late"], workers=[late], pure=False)
        assert done.result()[0] == late
    _read_back(alice_ws, base_key, ["w0", "late"])
    _delete(alice_ws, base_key)
