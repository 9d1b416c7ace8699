"""`sts-bridge run FILE|-` against the local platform: many data commands in one
process, a result per line, the highest exit status, bad lines refused before
any request, and one login and one STS exchange for the whole file.
(Ctrl-C in the middle of a batch: tests/faults/test_faults.py.)"""

from __future__ import annotations

import dataclasses
import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from cli_support import Cli

pytestmark = [pytest.mark.integration, pytest.mark.requires_radosgw("uploads and presigns")]


@pytest.fixture
def run_cli(run_cli: Cli) -> Cli:
    """A whole batch per command: a longer bound on a hung one."""
    return dataclasses.replace(run_cli, timeout=300)


def token_posts(platform: Any) -> int:
    return int(platform.idp_stats()["by_path"].get("POST /token", 0))


def test_lines_run_with_their_results_and_the_highest_exit_status(
    run_cli: Cli, tmp_path: Path
) -> None:
    base = f"run/{uuid.uuid4().hex}/"
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(f"content of {name}\n")
    (tmp_path / "out").mkdir()
    batch = tmp_path / "batch.txt"
    batch.write_text(
        "# upload two files, then read them back\n"
        f"upload {tmp_path / 'a.txt'} --to {base}a.txt\n"
        f"upload '{tmp_path / 'b.txt'}' --to {base}b.txt   # quoted, with a comment\n"
        f"upload {tmp_path / 'a.txt'} --to {base}rm/c.txt\n"
        f"download {base}missing.txt {tmp_path / 'out' / 'missing.txt'}\n"
    )
    first = run_cli(["run", str(batch)])
    assert first.returncode == 6, first.stderr  # NOT_FOUND is the worst line
    uris = first.stdout.splitlines()  # each upload's URI, in the order they ended
    assert sorted(u.split(base, 1)[1] for u in uris) == ["a.txt", "b.txt", "rm/c.txt"]
    (error,) = first.stderr.splitlines()  # one line for the one failure
    assert error.startswith("sts-bridge: error: line 5: download ")
    assert "missing.txt" in error and "Traceback" not in first.stderr
    assert not (tmp_path / "out" / "missing.txt").exists()

    second = run_cli(
        ["run", "--json", "-j", "2", "-"],
        stdin=(
            f"presign {base}a.txt --expires-in 10m\n"
            f"download {base}b.txt {tmp_path / 'out' / 'b.txt'}\n"
            f"ls {base}\n"
            f"rm {base}nothing/../x\n"
        ),
    )
    # a bad key is a usage error of its line: nothing ran
    assert second.returncode == 2, second.stderr
    assert second.stdout == ""
    assert second.stderr.startswith("sts-bridge: error: line 4: ")

    third = run_cli(
        ["run", "--json", "-j", "2", "-"],
        stdin=(
            f"presign {base}a.txt --expires-in 10m\n"
            f"download {base}b.txt {tmp_path / 'out' / 'b.txt'}\n"
            f"ls {base}\n"
            f"rm {base}rm/c.txt\n"
        ),
    )
    assert third.returncode == 0, third.stderr
    docs = {d["line"]: d for d in map(json.loads, third.stdout.splitlines())}
    assert sorted(docs) == [1, 2, 3, 4]
    assert {d["status"] for d in docs.values()} == {"ok"}
    assert {d["exit_code"] for d in docs.values()} == {0}
    assert docs[1]["command"] == f"presign {base}a.txt --expires-in 10m"
    (url,) = docs[1]["result"]
    with urllib.request.urlopen(url["url"], timeout=30) as response:
        assert response.read() == b"content of a.txt\n"
    assert docs[2]["result"] == [str(tmp_path / "out" / "b.txt")]
    assert (tmp_path / "out" / "b.txt").read_text() == "content of b.txt\n"
    listed = sorted(o["key"] for o in docs[3]["result"] if not o["is_prefix"])
    assert listed == [base + "a.txt", base + "b.txt"]  # rm/ may be gone already or not
    assert docs[4]["result"] == [f"deleted {base}rm/c.txt"]

    failing = run_cli(["run", "--json", "-"], stdin=f"download {base}nope {tmp_path / 'x'}\n")
    assert failing.returncode == 6
    (doc,) = map(json.loads, failing.stdout.splitlines())
    assert doc["status"] == "failed" and doc["exit_code"] == 6
    assert "nope" in doc["error"] and doc["hint"]


def test_a_bad_line_is_exit_2_before_any_request(
    run_cli: Cli, local_platform: Any, tmp_path: Path
) -> None:
    base = f"run/{uuid.uuid4().hex}/"
    (tmp_path / "a.txt").write_text("a\n")
    local_platform.reset_stats()
    result = run_cli(
        ["run", "-"],
        stdin=(
            f"upload {tmp_path / 'a.txt'} --to {base}a.txt\n"
            "presign --frobnicate x\n"
            "login\n"
            f"upload {tmp_path / 'a.txt'} --to {base}c.txt\n"
        ),
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert [line.split(":")[2].strip() for line in lines[:2]] == ["line 2", "line 3"]
    assert lines[-1].startswith("sts-bridge: hint: nothing was run")
    assert local_platform.api_stats()["total"] == 0
    assert local_platform.idp_stats()["total"] == 0
    listing = run_cli(["ls", base])
    assert listing.returncode == 0 and listing.stdout == ""


def test_many_lines_share_one_login_and_one_sts_exchange(
    run_cli: Cli, local_platform: Any, tmp_path: Path
) -> None:
    # Without a token cache every Client logs in by itself: one login for the
    # whole file shows that its lines share one Client, its workspace and its
    # STS credentials.
    no_cache = {"STS_BRIDGE_TOKEN_CACHE": "false", "TERRAPI_FLOW": "client-credentials"}
    run_cli = dataclasses.replace(run_cli, env={**run_cli.env, **no_cache})
    base = f"run/{uuid.uuid4().hex}/"
    files = tmp_path / "files"
    files.mkdir()
    lines = []
    for i in range(12):
        (files / f"f{i}.txt").write_text(f"{i}\n")
        lines.append(f"upload {files / f'f{i}.txt'} --to {base}f{i}.txt")
    lines += [f"presign {base}key-{i}.bin" for i in range(60)]
    local_platform.reset_stats()
    result = run_cli(["run", "-j", "8", "-"], stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 72
    assert token_posts(local_platform) == 1, local_platform.idp_stats()
    assert local_platform.api_stats()["sts_exchanges"] == 1, local_platform.api_stats()
    listing = run_cli(["ls", base])
    assert len(listing.stdout.splitlines()) == 12


def test_presign_lines_signed_together_each_get_their_own_urls(
    run_cli: Cli, tmp_path: Path
) -> None:
    # `run` signs consecutive presigns of one workspace, method and lifetime in
    # one pass (groups of 100 lines): every line still gets its own keys' URLs,
    # with its own lifetime and method, and the URLs open the objects.
    base = f"run/{uuid.uuid4().hex}/"
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(f"content of {name}\n")
        assert run_cli(["upload", str(tmp_path / name), "--to", base + name]).returncode == 0
    lines = [f"presign {base}k{i:03d}.bin --expires-in 10m" for i in range(150)]
    lines += [
        f"presign {base}b.txt {base}a.txt --expires-in 10m",  # in the second group
        f"presign {base}c.bin --expires-in 10m",  # the second group's last line
        f"presign {base}a.txt --method head --expires-in 5m",
        f"presign {base}b.txt --expires-in 5m",
        f"presign {base}b.txt --expires-in 2m",
    ]
    result = run_cli(["run", "--json", "-"], stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    docs = {d["line"]: d for d in map(json.loads, result.stdout.splitlines())}
    assert sorted(docs) == list(range(1, len(lines) + 1))
    expiry = {"10m": "600", "5m": "300", "2m": "120"}
    for number, text in enumerate(lines, start=1):
        words = text.split()
        keys = [w for w in words[1:] if w.startswith(base)]
        method = "HEAD" if "--method" in words else "GET"
        lifetime = expiry[words[-1]]
        got = docs[number]["result"]
        assert [u["key"] for u in got] == keys, text
        for u in got:
            assert u["method"] == method
            assert f"/{u['key']}?" in u["url"] and f"X-Amz-Expires={lifetime}&" in u["url"]
    for number, key in ((151, "a.txt"), (151, "b.txt"), (154, "b.txt")):
        (url,) = [u["url"] for u in docs[number]["result"] if u["key"] == base + key]
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.read() == f"content of {key}\n".encode()
    head = urllib.request.Request(docs[153]["result"][0]["url"], method="HEAD")
    with urllib.request.urlopen(head, timeout=30) as response:
        assert response.status == 200
