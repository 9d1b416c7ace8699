"""The fault table of issue 20: each fault ends as a serious tool ends it.

The CLI runs against the local platform behind the fault proxies
(conftest.py); what a case must show is in its docstring. The ``timeout``
given to ``run_cli`` only stops a hang (a hang fails the test); nothing here
asserts a duration.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from faults_support import Checker, Proxied, make_checker, one_line_error, run_cli

pytestmark = [pytest.mark.integration]

#: stops a hang; generous for a loaded machine, never a timing assertion
HANG_GUARD = 150


def _env(faults: Proxied) -> dict[str, str]:
    return faults.env_for_test  # type: ignore[attr-defined,no-any-return]


def _sts_cache_files(cache: Path) -> list[Path]:
    """The STS cache files holding credentials (one per workspace used)."""
    return [
        p
        for p in sorted((cache / "sts").glob("*.json"))
        if json.loads(p.read_text()).get("credentials")
    ]


# --------------------------------------------------------------------------
# a FIFO in place of a file that sts-bridge reads
# --------------------------------------------------------------------------
def test_sts_cache_replaced_by_a_fifo_is_ignored_at_once(
    faults: Proxied, checker: Checker, tmp_path: Path
) -> None:
    """Reading a FIFO blocks until a writer comes (forever): the cache is
    read without blocking, named "not a regular file", and replaced."""
    env = _env(faults)
    first, _ = run_cli(["ls", checker.base], env)
    assert first.returncode == 0, first.stderr.decode()
    (cache,) = _sts_cache_files(tmp_path / "cache")
    cache.unlink()
    os.mkfifo(cache, 0o600)
    result, _ = run_cli(["ls", checker.base], env, timeout=HANG_GUARD)
    assert result.returncode == 0, result.stderr.decode()
    assert "not a regular file" in result.stderr.decode()
    assert cache.is_file()  # replaced by the new credentials


def test_config_file_that_is_a_fifo_is_a_one_line_error(
    faults: Proxied, checker: Checker, tmp_path: Path
) -> None:
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo, 0o600)
    env = {**_env(faults), "STS_BRIDGE_CONFIG_FILE": str(fifo)}
    result, _ = run_cli(["ls", checker.base], env, timeout=HANG_GUARD)
    line = one_line_error(result)
    assert result.returncode == 3, line
    assert "not a regular file" in line and str(fifo) in line, line


# --------------------------------------------------------------------------
# an access token the API refuses, although the clock says it is valid
# --------------------------------------------------------------------------
def _refused_token_in_cache(cache: Path) -> str:
    """Make the cached access token one the API refuses (its signature no
    longer matches) while its expiry stays hours away; drop the STS cache so
    that the next command asks the API. Returns the refused token."""
    (path,) = sorted((cache / "tokens").glob("*.json"))
    doc = json.loads(path.read_text())
    header, payload, signature = doc["token"]["access_token"].split(".")
    flipped = "A" if signature[10] != "A" else "B"  # well-formed, wrongly signed
    forged = f"{header}.{payload}.{signature[:10]}{flipped}{signature[11:]}"
    doc["token"]["access_token"] = forged
    path.write_text(json.dumps(doc))
    for sts in (cache / "sts").glob("*.json"):
        sts.unlink()
    return _digest(forged)


def _digest(token: str) -> str:
    """Tokens are compared by digest: a failing assertion never prints one."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _cached_token(cache: Path) -> str:
    (path,) = sorted((cache / "tokens").glob("*.json"))
    return _digest(json.loads(path.read_text())["token"]["access_token"])


def test_token_refused_by_the_api_but_valid_by_the_clock_is_replaced_once(
    faults: Proxied, checker: Checker, tmp_path: Path
) -> None:
    """Service client with a secret: a 401 drops the cached token, gets a new
    one and retries once; ``login`` asks the provider, never the refused cache."""
    env = _env(faults)
    cache = tmp_path / "cache"
    first, _ = run_cli(["ls", checker.base], env)
    assert first.returncode == 0, first.stderr.decode()

    refused = _refused_token_in_cache(cache)
    again, _ = run_cli(["ls", checker.base], env)
    assert again.returncode == 0, again.stderr.decode()
    assert _cached_token(cache) != refused  # the cache holds the new token now

    refused = _refused_token_in_cache(cache)
    login, _ = run_cli(["login"], env)
    assert login.returncode == 0, login.stderr.decode()
    assert "Logged in" in login.stderr.decode()
    assert _cached_token(cache) != refused  # a new token, not the refused cache
    after, _ = run_cli(["ls", checker.base], env)
    assert after.returncode == 0, after.stderr.decode()


# --------------------------------------------------------------------------
# the API stops (SIGSTOP) while the STS credentials expire
# --------------------------------------------------------------------------
#: "well before 2 minutes": the API's deadline (45 s, every attempt included)
#: plus the start of the CLI. Without the deadline a stopped API holds the
#: command for 4 x 30 s, and the run below is killed and the test fails.
STOPPED_API_BOUND = 100


def test_api_stopped_while_sts_credentials_expire_ls_is_one_line(
    short_faults: Proxied, readers: dict[int, Any], tmp_path: Path
) -> None:
    """5 s STS credentials; the API process is stopped, they expire, ``ls``:
    one error line and one hint (exit 7), no botocore traceback."""
    checker = make_checker(short_faults.platform, readers, tmp_path / "checker-cache")
    env = _env(short_faults)
    first, _ = run_cli(["ls", checker.base], env)
    assert first.returncode == 0, first.stderr.decode()
    (cache,) = _sts_cache_files(tmp_path / "cache")
    expiry = json.loads(cache.read_text())["credentials"]["expiry"]
    pid = short_faults.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        while time.time() <= expiry:  # the event: the cached credentials have expired
            time.sleep(0.2)
        result, seconds = run_cli(["ls", checker.base], env, timeout=STOPPED_API_BOUND)
    finally:
        os.kill(pid, signal.SIGCONT)
    line = one_line_error(result)
    assert result.returncode == 7, line
    assert "did not answer" in line, line
    lines = [ln for ln in result.stderr.decode().splitlines() if ln.strip()]
    assert len(lines) == 2 and lines[1].startswith("sts-bridge: hint: "), lines
    print(f"FAULT API stopped, ls: exit 7 in {seconds:.1f} s: {line}")


# --------------------------------------------------------------------------
# credentials printed for another tool
# --------------------------------------------------------------------------
def test_printed_credentials_have_at_least_half_their_life_left(
    faults: Proxied, checker: Checker, tmp_path: Path
) -> None:
    """``credentials --format env`` hands out a snapshot that cannot refresh
    itself: cached credentials past half their life are exchanged first, and
    stderr says when the printed ones expire."""
    import shlex
    from datetime import datetime

    env = _env(faults)
    first, _ = run_cli(["ls", checker.base], env)
    assert first.returncode == 0, first.stderr.decode()
    (cache,) = _sts_cache_files(tmp_path / "cache")
    doc = json.loads(cache.read_text())
    # valid for 10 more minutes, but issued 50 minutes ago: a sixth of the life left,
    # outside every refresh window, so only the half-life rule refreshes them
    now = time.time()
    doc["credentials"]["issued_at"] = now - 3000
    doc["credentials"]["expiry"] = now + 600
    cache.write_text(json.dumps(doc))
    stale_key = doc["credentials"]["access_key"]

    result, _ = run_cli(["credentials", "--format", "env"], env)
    assert result.returncode == 0, result.stderr.decode()
    exported = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in result.stdout.decode().splitlines()
    )
    assert exported["AWS_ACCESS_KEY_ID"] != stale_key  # exchanged first
    expires = datetime.fromisoformat(exported["AWS_CREDENTIAL_EXPIRATION"].replace("Z", "+00:00"))
    assert expires.timestamp() > now + 600
    assert "expire at" in result.stderr.decode() and "--serve" in result.stderr.decode()


# --------------------------------------------------------------------------
# the destination of a download changes under it
# --------------------------------------------------------------------------
def test_destination_replaced_by_a_directory_mid_download(
    faults: Proxied, checker: Checker, tmp_path: Path
) -> None:
    """The error names the destination (not the temp file) and the temp file goes."""
    import subprocess
    import sys

    from faults_support import MiB, pattern_file

    data = pattern_file(tmp_path / "src.bin", 17 * MiB, seed=20)
    key = checker.base + "obj.bin"
    checker.put(key, data)
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "becomesdir"
    faults.s3.set("trickle", rate=2 * MiB)  # ~8 s: time to swap the destination
    proc = subprocess.Popen(
        [sys.executable, "-m", "sts_bridge", "download", key, str(dest)],
        env=_env(faults), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".part") for p in out.iterdir()):
            assert time.monotonic() < deadline and proc.poll() is None, "no temp file appeared"
            time.sleep(0.05)
        dest.mkdir()  # the destination becomes a directory mid-download
        faults.s3.heal()
        _, err = proc.communicate(timeout=HANG_GUARD)
    finally:
        proc.kill()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, b"", err)
    line = one_line_error(result)
    assert str(dest) in line and "directory" in line, line
    assert ".part" not in line, line
    assert sorted(p.name for p in out.iterdir()) == ["becomesdir"]  # no temp file left
    assert list(dest.iterdir()) == []  # nothing put inside it either


# --------------------------------------------------------------------------
# a cached workspace description whose store cannot be reached
# --------------------------------------------------------------------------
def test_cached_entry_with_an_unreachable_endpoint_is_resolved_again(
    faults: Proxied, checker: Checker, tmp_path: Path
) -> None:
    """The STS cache names a storage endpoint nobody listens on (the store
    moved): the entry is dropped and the API asked again, at once, not
    after the cached credentials expire."""
    from sts_bridge_devstack.ports import free_port

    env = _env(faults)
    first, _ = run_cli(["ls", checker.base], env)
    assert first.returncode == 0, first.stderr.decode()
    (cache,) = _sts_cache_files(tmp_path / "cache")
    doc = json.loads(cache.read_text())
    real = doc["storage_point"]["endpoint_url"]
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    src = tmp_path / "a.txt"
    src.write_bytes(b"through the endpoint the API names now")
    for args in (["ls", checker.base], ["upload", str(src), "--to", checker.base]):
        doc["storage_point"]["endpoint_url"] = dead
        cache.write_text(json.dumps(doc))
        result, _ = run_cli(args, env, timeout=HANG_GUARD)
        assert result.returncode == 0, (args, result.stderr.decode())
        assert json.loads(cache.read_text())["storage_point"]["endpoint_url"] == real
    assert checker.data(checker.base + "a.txt") == src.read_bytes()


# --------------------------------------------------------------------------
# a store that is full: radosgw holds every write without an answer
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A platform of its own whose radosgw store (memstore, 96 MiB) is filled
    up: radosgw 16 then holds every write (PUT, POST, DELETE) without ever
    answering, and still answers reads at once (found on this platform)."""
    from sts_bridge_devstack.platform import LocalPlatform
    from sts_bridge_devstack.pytest_plugin import require_platform

    require_platform("radosgw")
    platform = LocalPlatform(
        s3_backend="radosgw",
        memstore_bytes=96 << 20,
        workdir=tmp_path_factory.mktemp("full-store"),
    ).start()
    try:
        yield platform
    finally:
        platform.stop()


def _fill(platform: Any) -> None:
    """Write 8 MiB objects until radosgw stops answering writes (the monitor
    marks the OSD full a few seconds after it is)."""
    admin = platform.s3.client("s3", read_timeout=5, connect_timeout=5)
    bucket = "fill-" + os.urandom(4).hex()
    admin.create_bucket(Bucket=bucket)
    body = b"\0" * (8 << 20)
    for i in range(200):
        try:
            admin.put_object(Bucket=bucket, Key=f"o{i}", Body=body)
        except Exception as exc:  # the write got no answer: full
            if "timeout" in type(exc).__name__.lower() or "timed out" in str(exc):
                return
            raise
        time.sleep(0.5)
    raise AssertionError("radosgw took 1.6 GB into a 96 MiB store")


@pytest.mark.requires_radosgw("a full radosgw memstore")
def test_full_store_is_named_full_or_refusing_writes(full_store: Any, tmp_path: Path) -> None:
    from faults_support import STALL, pattern_file

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "S3_", "TERRAPI_", "STS_BRIDGE_"))
    }
    env.update(full_store.env())
    env["STS_BRIDGE_CACHE_DIR"] = str(tmp_path / "cache")
    env["STS_BRIDGE_CONFIG_FILE"] = str(tmp_path / "no-config")
    env["STS_BRIDGE_STALL_TIMEOUT"] = str(STALL)
    first, _ = run_cli(["ls"], env)  # credentials cached while the store takes writes
    assert first.returncode == 0, first.stderr.decode()
    _fill(full_store)
    pattern_file(tmp_path / "one.bin", 1 << 20)
    result, seconds = run_cli(
        ["upload", str(tmp_path / "one.bin"), "--to", "full/"], env, timeout=HANG_GUARD
    )
    line = one_line_error(result)
    assert result.returncode == 8, line
    assert "full or refusing writes" in line, line
    # said after the second stalled write, not after every retry of the first
    assert "on 2 attempts in a row" in line, line
    print(f"FAULT store full: exit 8 in {seconds:.1f} s: {line}")


def test_the_readme_counts_the_fault_cases() -> None:
    """The README's failure section says how many cases tests/faults/ holds;
    pytest's own collection counts them (parametrized cases each)."""
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    claim = re.search(r"`tests/faults/` \((\d+) fault cases", readme)
    assert claim, "README.md must say how many fault cases tests/faults/ holds"
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         str(root / "tests" / "faults")],
        capture_output=True, text=True, cwd=root, check=True,
    )  # fmt: skip
    total = sum(1 for line in collected.stdout.splitlines() if "::" in line)
    assert total == int(claim.group(1)), (total, claim.group(0))
