#!/usr/bin/env python
"""sts-bridge against what users already know: boto3, the AWS CLI, s5cmd.

    make bench                      # the full run (several minutes; needs a quiet machine)
    .venv/bin/python bench/run.py --quick   # small sizes, 1 repetition: validates the harness

One run starts the local platform (IdP + reference TerrAPI API + radosgw on
memstore), makes the test files once, and then, on the same radosgw, with
the same files and the SAME workspace STS credentials for every contender
(``sts-bridge credentials WORKSPACE --format env``), runs each scenario
interleaved (A B C ... A B C ..., the starting contender rotating each
round), a warm-up round first (not counted), each contender as its own
subprocess measured from outside (see ``_measure.py``).

Without the SDK (or with ``--plain``) it runs the non-sts-bridge contenders
against a bare RadosGateway with a plain radosgw user.

Results: a markdown table on stdout and in ``bench/results/latest.md`` +
``latest.json`` (``quick.*`` for ``--quick``, ``partial.*`` for ``--only``); a full run
also refreshes the table in ``bench/README.md`` (and in the top-level
README.md when it has the ``<!-- bench:start -->``/``<!-- bench:end -->``
markers).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402
import _tools  # noqa: E402
from _measure import CommandFailed, Sample, run_measured  # noqa: E402

PY = sys.executable
VENV_BIN = Path(PY).parent
MiB = 1 << 20
KiB = 1 << 10


# --------------------------------------------------------------------------- model
@dataclass
class Target:
    """Where every contender reads and writes, and with which credentials."""

    mode: str  # "platform" (sts-bridge contenders too) or "plain"
    endpoint: str
    region: str
    bucket: str
    prefix: str  # the workspace prefix ("a2s/") or "" ; keys below are relative to it
    admin: Any  # boto3 S3 client that may put/head/list/delete in the bucket (not measured)
    aws_creds: Callable[[], dict[str, str]]  # AWS_* credential variables, fresh enough
    sts_env: dict[str, str] = field(default_factory=dict)  # TERRAPI_* (+ cache dir)
    workspace: str = ""
    platform: Any = None  # LocalPlatform (request counters) in platform mode
    gc: Callable[[], None] = lambda: None  # make radosgw free deleted objects' RAM now
    owner: Any = None  # the bucket owner's client (fast multi-object deletes), if any


@dataclass
class Contender:
    id: str
    label: str
    sts: bool  # an sts-bridge contender (numerator of the ratios)
    env: Callable[[], dict[str, str]]
    upload: Callable[[str, str], list[str]] | None = None  # (file, key) -> argv
    download: Callable[[str, str], list[str]] | None = None  # (key, file) -> argv
    upload_many: Callable[[str, str], list[str]] | None = None  # (dir, key prefix) -> argv
    presign: Callable[[str], list[str]] | None = None  # (key) -> argv
    presign_label: str = ""
    sync: Callable[[str, str], list[str]] | None = None  # (dir, key prefix) -> argv
    sync_label: str = ""
    batch: Callable[[str], list[str]] | None = None  # (file of commands) -> argv
    batch_line: Callable[[str, str, str], str] | None = None  # (op, a, b) -> one line
    batch_label: str = ""
    # (key, file) -> argv: the fixed-cost row (a warm download of a 3-byte object)
    tiny_download: Callable[[str, str], list[str]] | None = None


@dataclass
class Scenario:
    id: str
    label: str
    kind: str  # upload | download | upload_many | resync | presign | batch | fixed
    size: int = 0  # bytes moved per run
    objects: int = 1
    # upload: every run replaces an object of the same size and other content;
    # download: every run writes over a file of the same size and other content
    over: bool = False


# --------------------------------------------------------------------------- env
def compile_sources() -> None:
    """Byte-compile sts-bridge's sources, as ``pip install`` does for a user.

    The project is installed editable, so its modules have no ``.pyc`` until
    Python writes them, and with ``PYTHONDONTWRITEBYTECODE=1`` (set on some
    machines) it never does: every CLI run would compile ~40 modules from
    source (about 0.1 CPU-s per command), a cost no installed CLI pays.
    """
    import compileall

    spec = importlib.util.find_spec("sts_bridge")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            compileall.compile_dir(folder, quiet=1)


def _base_env(tmp: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "TERRAPI_", "STS_BRIDGE_", "BOTO"))
    }
    # no ~/.aws file, no instance metadata probe: only what we pass counts
    env["AWS_CONFIG_FILE"] = str(tmp / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp / "no-aws-credentials")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def _aws_env(base: dict[str, str], t: Target) -> dict[str, str]:
    env = dict(base)
    env.update(t.aws_creds())
    env["AWS_DEFAULT_REGION"] = t.region
    env["AWS_REGION"] = t.region
    env["AWS_ENDPOINT_URL"] = t.endpoint
    return env


# --------------------------------------------------------------------------- contenders
def contenders(
    t: Target, tmp: Path, aws: Path, s5: Path, baseline: Path | None = None
) -> list[Contender]:
    """Every contender; ``baseline`` is the sts-bridge CLI of ``_tools.FIXED_COST_BASELINE``
    (the fixed-cost row only), when it is installed."""
    base = _base_env(tmp)

    def other_env() -> dict[str, str]:
        return _aws_env(base, t)

    def s3url(key: str) -> str:
        return f"s3://{t.bucket}/{t.prefix}{key}"

    def s5_line(op: str, a: str, b: str) -> str:
        q = shlex.quote
        if op == "presign":  # 10 min, as the sts-bridge lines
            return f"presign --expire 10m {q(s3url(a))}"
        if op == "upload":
            return f"cp {q(a)} {q(s3url(b))}"
        return f"cp {q(s3url(a))} {q(b)}"

    boto = [PY, str(HERE / "boto3_defaults.py")]
    aws_common = ["--only-show-errors", "--endpoint-url", t.endpoint]
    s5_common = [str(s5), "--endpoint-url", t.endpoint, "--log", "error"]
    out: list[Contender] = []
    if t.mode == "platform":
        out += sts_contenders(t, base)
        if baseline is not None:
            out.append(baseline_contender(t, base, tmp, baseline))
    out += [
        Contender(
            "boto3",
            "boto3 defaults",
            False,
            other_env,
            upload=lambda f, k: [*boto, "upload", f, t.bucket, t.prefix + k],
            download=lambda k, f: [*boto, "download", t.bucket, t.prefix + k, f],
            upload_many=lambda d, p: [*boto, "upload-many", d, t.bucket, t.prefix + p],
            presign=lambda k: [*boto, "presign", t.bucket, t.prefix + k],
            presign_label="boto3 one-shot script (SigV2 default)",
        ),
        Contender(
            "boto3-32t",
            "boto3 defaults, 32 threads",
            False,
            other_env,
            upload_many=lambda d, p: [
                *boto,
                "upload-many",
                d,
                t.bucket,
                t.prefix + p,
                "--threads",
                "32",
            ],
        ),
        Contender(
            "aws",
            "aws s3 cp",
            False,
            other_env,
            upload=lambda f, k: [str(aws), "s3", "cp", f, s3url(k), *aws_common],
            download=lambda k, f: [str(aws), "s3", "cp", s3url(k), f, *aws_common],
            upload_many=lambda d, p: [
                str(aws),
                "s3",
                "cp",
                d,
                s3url(p),
                "--recursive",
                *aws_common,
            ],
            presign=lambda k: [str(aws), "s3", "presign", s3url(k), "--endpoint-url", t.endpoint],
            presign_label="aws s3 presign (SigV2 default)",
            tiny_download=lambda k, f: [str(aws), "s3", "cp", s3url(k), f, *aws_common],
            sync=lambda d, p: [str(aws), "s3", "sync", d, s3url(p), *aws_common],
            sync_label="aws s3 sync (size + mtime)",
        ),
        Contender(
            "s5cmd",
            "s5cmd cp",
            False,
            other_env,
            upload=lambda f, k: [*s5_common, "cp", f, s3url(k)],
            download=lambda k, f: [*s5_common, "cp", s3url(k), f],
            upload_many=lambda d, p: [*s5_common, "cp", d.rstrip("/") + "/*", s3url(p)],
            sync=lambda d, p: [*s5_common, "sync", d.rstrip("/") + "/", s3url(p)],
            sync_label="s5cmd sync (size + mtime)",
            batch=lambda f: [*s5_common, "run", f],
            batch_line=s5_line,
            batch_label="s5cmd run (same lines)",
            tiny_download=lambda k, f: [*s5_common, "cp", s3url(k), f],
        ),
    ]
    return out


def baseline_contender(t: Target, base: dict[str, str], tmp: Path, cli: Path) -> Contender:
    """The sts-bridge CLI before the urllib3 transport, for the fixed-cost row only.

    It keeps its own credential cache (that version's cache format is its own):
    the row's warm-up round fills it, so the counted rounds are warm."""
    env = dict(base)
    env.update(t.sts_env)
    env["STS_BRIDGE_CACHE_DIR"] = str(tmp / "sts-bridge-cache-baseline")
    ws = t.workspace
    return Contender(
        "stsb-base",
        f"sts-bridge CLI at {_tools.FIXED_COST_BASELINE} (before urllib3)",
        False,  # a reference point, not a contender under test
        lambda: env,
        tiny_download=lambda k, f: [str(cli), "-q", "download", k, f, "--workspace", ws],
    )


def sts_contenders(t: Target, base: dict[str, str]) -> list[Contender]:
    """sts-bridge's SDK (``upload_to_workspace``, ``Workspace.download``) and CLI."""
    env = dict(base)
    env.update(t.sts_env)
    cli = str(_tools.sts_bridge_cli())  # as users install it: not the editable dev install
    sdk = [PY, str(HERE / "stsb_sdk.py")]
    ws = t.workspace

    def sts_env() -> dict[str, str]:
        return env

    def batch_line(op: str, a: str, b: str) -> str:
        q = shlex.quote
        if op == "presign":  # 10 min: within the platform's 15-min credentials
            return f"presign {q(a)} --workspace {q(ws)} --expires-in 10m"
        if op == "upload":
            return f"upload {q(a)} --to {q(b)} --workspace {q(ws)}"
        return f"download {q(a)} {q(b)} --workspace {q(ws)}"

    def cli_row(
        cid: str, label: str, row_env: Callable[[], dict[str, str]], presign: str, sync: str
    ) -> Contender:
        """The installed CLI doing every scenario."""
        return Contender(
            cid,
            label,
            True,
            row_env,
            upload=lambda f, k: [cli, "-q", "upload", f, "--to", k, "--workspace", ws],
            download=lambda k, f: [cli, "-q", "download", k, f, "--workspace", ws],
            upload_many=lambda d, p: [cli, "-q", "upload", d, "--to", p, "--workspace", ws],
            presign=lambda k: [cli, "presign", k, "--workspace", ws],
            presign_label=presign,
            sync=lambda d, p: [cli, "-q", "sync", d, f"workspace://{ws}/{p}"],
            sync_label=sync,
            batch=lambda f: [cli, "-q", "run", f],
            batch_line=batch_line,
            batch_label="sts-bridge run (default --jobs)",
            tiny_download=lambda k, f: [cli, "-q", "download", k, f, "--workspace", ws],
        )

    return [
        Contender(
            "stsb-sdk",
            "sts-bridge SDK",
            True,
            sts_env,
            upload=lambda f, k: [*sdk, "upload", ws, f, k],
            download=lambda k, f: [*sdk, "download", ws, k, f],
            upload_many=lambda d, p: [*sdk, "upload", ws, d, p],
        ),
        Contender(
            "stsb-sdk-50m",
            "sts-bridge SDK, s5cmd's parts (50 MiB x 5)",
            True,
            sts_env,
            upload=lambda f, k: [*sdk, "upload-50m", ws, f, k],
        ),
        Contender(
            "stsb-sdk-direct",
            "sts-bridge SDK, O_DIRECT writes from 64 MiB",
            True,
            sts_env,
            download=lambda k, f: [*sdk, "download-direct", ws, k, f],
        ),
        cli_row(
            "stsb-cli",
            "sts-bridge CLI",
            sts_env,
            "sts-bridge presign (SigV4, cached credentials, default 1h)",
            "sts-bridge sync (by content, hash cache)",
        ),
        # the platform's STS credentials live 15 min: a 1 h URL makes the CLI try a
        # refresh first; this variant shows the cost of signing alone
        Contender(
            "stsb-cli-10m",
            "sts-bridge CLI --expires-in 10m",
            True,
            sts_env,
            presign=lambda k: [cli, "presign", k, "--workspace", ws, "--expires-in", "10m"],
            presign_label="sts-bridge presign --expires-in 10m (cached credentials)",
        ),
    ]


KNOB_CONTENDER = re.compile(r"stsb-sdk-([pr])(\d+)x(\d+)")


def knob_contender(t: Target, base: dict[str, str], cid: str) -> Contender | None:
    """``stsb-sdk-p<MiB>x<N>``: the SDK uploading in parts of <MiB> MiB, N in
    flight; ``stsb-sdk-r<MiB>x<N>``: downloading in ranges of <MiB> MiB, N in
    flight (the A/B of the transfer knobs; only when named in --contenders)."""
    m = KNOB_CONTENDER.fullmatch(cid)
    if m is None or t.mode != "platform":
        return None
    kind, mib, flight = m.groups()
    env = {**base, **t.sts_env}
    sdk = [PY, str(HERE / "stsb_sdk.py")]
    ws = t.workspace
    if kind == "p":
        return Contender(
            cid,
            f"sts-bridge SDK, {mib} MiB parts x {flight}",
            True,
            lambda: env,
            upload=lambda f, k: [*sdk, "upload-knobs", ws, f, k, mib, flight],
        )
    return Contender(
        cid,
        f"sts-bridge SDK, {mib} MiB ranges x {flight}",
        True,
        lambda: env,
        download=lambda k, f: [*sdk, "download-knobs", ws, k, f, mib, flight],
    )


# --------------------------------------------------------------------------- files
def make_file(path: Path, size: int) -> None:
    chunk = 8 * MiB
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def make_small_files(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"f{i:05d}.bin").write_bytes(os.urandom(size))


# --------------------------------------------------------------------------- S3 helpers
def _delete_prefix(t: Target, prefix: str) -> int:
    full = t.prefix + prefix
    keys: list[str] = []
    pages = t.admin.get_paginator("list_objects_v2").paginate(Bucket=t.bucket, Prefix=full)
    for page in pages:
        keys += [o["Key"] for o in page.get("Contents", [])]
    if not keys:
        return 0
    for client in (t.owner, t.admin):
        if client is None:
            continue
        try:
            for i in range(0, len(keys), 1000):
                objs = [{"Key": k} for k in keys[i : i + 1000]]
                resp = client.delete_objects(
                    Bucket=t.bucket, Delete={"Objects": objs, "Quiet": True}
                )
                if resp.get("Errors"):
                    raise RuntimeError(str(resp["Errors"][:1]))
            return len(keys)
        except Exception:  # noqa: S112 - radosgw 16 refuses DeleteObjects to sessions
            continue
    # one DELETE per object with the workspace credentials
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: t.admin.delete_object(Bucket=t.bucket, Key=k), keys))
    return len(keys)


def _count_prefix(t: Target, prefix: str) -> tuple[int, int]:
    full = t.prefix + prefix
    n = size = 0
    pages = t.admin.get_paginator("list_objects_v2").paginate(Bucket=t.bucket, Prefix=full)
    for page in pages:
        for o in page.get("Contents", []):
            n += 1
            size += o["Size"]
    return n, size


def _abort_uploads(t: Target) -> None:
    with contextlib.suppress(Exception):
        resp = t.admin.list_multipart_uploads(Bucket=t.bucket, Prefix=t.prefix)
        for u in resp.get("Uploads", []):
            t.admin.abort_multipart_upload(Bucket=t.bucket, Key=u["Key"], UploadId=u["UploadId"])


# --------------------------------------------------------------------------- running
def _order(items: list[Contender], rnd: int) -> list[Contender]:
    k = rnd % len(items)
    return items[k:] + items[:k]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measured_run(t: Target, c: Contender, argv: list[str]) -> Sample:
    """One measured run; for sts-bridge, also the API/IdP requests it made (on the servers)."""
    env = c.env()
    if not (c.sts and t.platform is not None):
        return run_measured(argv, env=env)
    t.platform.reset_stats()
    s = run_measured(argv, env=env)
    n = _counts(t.platform)
    s.requests = {"api": n["api"], "idp": n["idp"], "idp_client": n["idp_client"]}
    return s


def _record_failure(
    results: dict[str, list[Sample]], sc: Scenario, c: Contender, rnd: int, exc: CommandFailed
) -> None:
    """A round whose command failed: said, and kept as a failed run (warm-up rounds too)."""
    _say(f"  {sc.id} {c.id} round {rnd}: FAILED {exc}")
    results[c.id].append(Sample(float("nan"), float("nan"), 0, exc.sample.rc))


def _record_round(
    results: dict[str, list[Sample]],
    sc: Scenario,
    c: Contender,
    rnd: int,
    s: Sample,
    *,
    ok: bool,
    counted: bool,
) -> None:
    """One finished round: said, and kept when ``counted`` (not a warm-up); a round
    whose work was not really done (``ok`` false) is kept as failed (rc -999)."""
    if not ok:
        _say(f"  {sc.id} {c.id} round {rnd}: WRONG RESULT (not counted)")
        s.rc = -999
    tag = "" if counted else " (warm-up)"
    _say(
        f"  {sc.id:<14} {c.id:<10} r{rnd} wall {s.wall:7.3f} s  cpu {s.cpu:6.2f} s  "
        f"rss {s.rss / 1e6:6.1f} MB{tag}"
    )
    if counted:
        results[c.id].append(s)


def _prefill(dest: Path, other: Path) -> None:
    """``dest`` made a copy of ``other`` and flushed to disk (not measured), so the
    measured download writes over an existing file and no writeback of this copy
    lands inside the measured run."""
    shutil.copyfile(other, dest)
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_blocks(a: Path, b: Path, blocks: int = 16, block: int = 64 * KiB) -> bool:
    """Equal sizes and equal bytes at ``blocks`` offsets spread from start to end:
    tells a file written over from one left as it was, without reading 1 GiB twice."""
    size = a.stat().st_size
    if size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for i in range(blocks):
            off = max(0, (size - block) * i // max(blocks - 1, 1))
            fa.seek(off)
            fb.seek(off)
            if fa.read(block) != fb.read(block):
                return False
    return True


def run_scenario(
    sc: Scenario,
    cs: list[Contender],
    t: Target,
    src: Path,
    work: Path,
    warmup: int,
    reps: int,
    other: Path | None = None,
) -> dict[str, list[Sample]]:
    """Interleaved rounds of one scenario; returns the counted samples per contender.

    With ``sc.over`` (``other``: a file of the same size as ``src``, other bytes), an
    upload replaces the one object of the scenario, which the previous run left (the
    harness puts ``other`` there first), alternating ``src`` and ``other`` so that every
    run changes the content; a download writes over a copy of ``other``.
    """
    getter = {"upload": "upload", "download": "download", "upload_many": "upload_many"}[sc.kind]
    active = [c for c in cs if getattr(c, getter) is not None]
    results: dict[str, list[Sample]] = {c.id: [] for c in active}
    remote_src = f"bench/src-{sc.id}"
    if sc.over and other is None:
        raise ValueError(f"scenario {sc.id} writes over existing data: give other=")
    if sc.kind == "download":
        t.admin.upload_file(str(src), t.bucket, t.prefix + remote_src)
    shared_key = f"bench/{sc.id}/object"  # the object every run of an upload-over replaces
    holds = other  # what shared_key holds now

    def put_shared() -> str:
        t.admin.upload_file(str(other), t.bucket, t.prefix + shared_key)
        return t.admin.head_object(Bucket=t.bucket, Key=t.prefix + shared_key)["ETag"]

    etag_before = put_shared() if sc.over and sc.kind == "upload" else ""
    try:
        for rnd in range(warmup + reps):
            counted = rnd >= warmup
            for c in _order(active, rnd):
                key = f"bench/{sc.id}/{c.id}-{rnd}"
                if sc.kind == "upload" and sc.over:
                    key = shared_key
                    body = src if holds == other else other
                    argv = c.upload(str(body), key)  # type: ignore[misc]
                elif sc.kind == "upload":
                    argv = c.upload(str(src), key)  # type: ignore[misc]
                elif sc.kind == "download":
                    dest = work / f"dl-{c.id}-{rnd}.bin"
                    if sc.over:
                        _prefill(dest, other)  # type: ignore[arg-type]
                    argv = c.download(remote_src, str(dest))  # type: ignore[misc]
                else:
                    key += "/"
                    argv = c.upload_many(str(src), key)  # type: ignore[misc]
                try:
                    s = measured_run(t, c, argv)
                except CommandFailed as exc:
                    _record_failure(results, sc, c, rnd, exc)
                    _abort_uploads(t)
                    if sc.kind == "upload" and sc.over:
                        etag_before, holds = put_shared(), other  # a known state again
                    else:
                        _delete_prefix(t, key)
                    if sc.kind == "download":
                        with contextlib.suppress(FileNotFoundError):
                            dest.unlink()
                    continue
                # check the work was really done, then free the server's RAM
                if sc.kind == "upload" and sc.over:
                    head = t.admin.head_object(Bucket=t.bucket, Key=t.prefix + key)
                    # same size both ways: a new ETag says the object was replaced
                    ok = head["ContentLength"] == sc.size and head["ETag"] != etag_before
                    etag_before, holds = head["ETag"], body
                elif sc.kind == "upload":
                    got = t.admin.head_object(Bucket=t.bucket, Key=t.prefix + key)["ContentLength"]
                    ok = got == sc.size
                    _delete_prefix(t, key)
                elif sc.kind == "download":
                    ok = dest.exists() and dest.stat().st_size == sc.size
                    if ok and sc.over:
                        ok = _same_blocks(dest, src)
                    with contextlib.suppress(FileNotFoundError):
                        dest.unlink()
                else:
                    n, size = _count_prefix(t, key)
                    ok = n == sc.objects and size == sc.size
                    _delete_prefix(t, key)
                if sc.kind != "download":
                    t.gc()
                _record_round(results, sc, c, rnd, s, ok=ok, counted=counted)
    finally:
        if sc.kind == "download":
            _delete_prefix(t, remote_src)
        if sc.over and sc.kind == "upload":
            _delete_prefix(t, shared_key)
        _abort_uploads(t)
        t.gc()
    return results


def run_resync(
    sc: Scenario, cs: list[Contender], t: Target, src: Path, warmup: int, reps: int
) -> dict[str, list[Sample]]:
    """Re-sync an unchanged tree: each contender first syncs ``src`` to its own folder
    (not measured), then the measured rounds sync it again (nothing to transfer)."""
    active = [c for c in cs if c.sync is not None]
    results: dict[str, list[Sample]] = {c.id: [] for c in active}
    folders = {c.id: f"bench/{sc.id}/{c.id}/" for c in active}
    try:
        for c in active:
            first = measured_run(t, c, c.sync(str(src), folders[c.id]))  # type: ignore[misc]
            n, size = _count_prefix(t, folders[c.id])
            _say(f"  {sc.id:<14} {c.id:<10} first sync wall {first.wall:7.3f} s ({n} objects)")
            if n != sc.objects or size != sc.size:
                _say(f"  {sc.id} {c.id}: first sync left {n} objects / {size} bytes")
        for rnd in range(warmup + reps):
            counted = rnd >= warmup
            for c in _order(active, rnd):
                argv = c.sync(str(src), folders[c.id])  # type: ignore[misc]
                try:
                    s = measured_run(t, c, argv)
                except CommandFailed as exc:
                    _record_failure(results, sc, c, rnd, exc)
                    continue
                n, size = _count_prefix(t, folders[c.id])
                ok = n == sc.objects and size == sc.size
                _record_round(results, sc, c, rnd, s, ok=ok, counted=counted)
    finally:
        for folder in folders.values():
            _delete_prefix(t, folder)
        t.gc()
    return results


def run_batch(
    sc: Scenario,
    cs: list[Contender],
    t: Target,
    op: str,
    src: Path,
    work: Path,
    warmup: int,
    reps: int,
) -> dict[str, list[Sample]]:
    """``sc.objects`` commands of one kind (``op``: presign, upload, download) in a
    file, run by each contender's batch mode (``sts-bridge run`` / ``s5cmd run``):
    the same lines, each tool in its own syntax. Downloads read objects put once
    (not measured) from the files in ``src``; uploads send the files in ``src``."""
    active = [c for c in cs if c.batch is not None and c.batch_line is not None]
    results: dict[str, list[Sample]] = {c.id: [] for c in active}
    names = sorted(p.name for p in src.iterdir()) if op != "presign" else []
    remote_src = f"bench/src-{sc.id}/"
    if op == "download":
        for name in names:
            t.admin.upload_file(str(src / name), t.bucket, t.prefix + remote_src + name)
    try:
        for rnd in range(warmup + reps):
            counted = rnd >= warmup
            for c in _order(active, rnd):
                line = c.batch_line
                assert line is not None and c.batch is not None
                folder = f"bench/{sc.id}/{c.id}-{rnd}/"
                dest = work / f"batch-{c.id}-{rnd}"
                if op == "presign":
                    lines = [line(op, f"{folder}k{i:05d}.bin", "") for i in range(sc.objects)]
                elif op == "upload":
                    lines = [line(op, str(src / n), folder + n) for n in names]
                else:
                    dest.mkdir()
                    lines = [line(op, remote_src + n, str(dest / n)) for n in names]
                commands = work / f"batch-{c.id}-{rnd}.txt"
                commands.write_text("\n".join(lines) + "\n")
                try:
                    s = measured_run(t, c, c.batch(str(commands)))
                except CommandFailed as exc:
                    _record_failure(results, sc, c, rnd, exc)
                    _delete_prefix(t, folder)
                    shutil.rmtree(dest, ignore_errors=True)
                    continue
                if op == "presign":
                    urls = [u for u in s.stdout.splitlines() if u.startswith("http")]
                    ok = len(urls) == sc.objects
                elif op == "upload":
                    n, size = _count_prefix(t, folder)
                    ok = n == sc.objects and size == sc.size
                    _delete_prefix(t, folder)
                    t.gc()
                else:
                    got = sum(p.stat().st_size for p in dest.iterdir())
                    ok = len(list(dest.iterdir())) == sc.objects and got == sc.size
                    shutil.rmtree(dest, ignore_errors=True)
                _record_round(results, sc, c, rnd, s, ok=ok, counted=counted)
    finally:
        if op == "download":
            _delete_prefix(t, remote_src)
        _abort_uploads(t)
        t.gc()
    return results


def run_presign_cli(
    cs: list[Contender], t: Target, warmup: int, reps: int
) -> dict[str, list[Sample]]:
    active = [c for c in cs if c.presign is not None]
    results: dict[str, list[Sample]] = {c.id: [] for c in active}
    for rnd in range(warmup + reps):
        for c in _order(active, rnd):
            try:
                s = measured_run(t, c, c.presign("bench/some/object.bin"))  # type: ignore[misc]
            except CommandFailed as exc:
                _say(f"  presign {c.id}: FAILED {exc}")
                continue
            ok = s.stdout.strip().startswith("http")
            if not ok:
                _say(f"  presign {c.id}: no URL on stdout: {s.stdout[:200]!r}")
                continue
            _say(f"  presign        {c.id:<10} r{rnd} wall {s.wall:7.3f} s  cpu {s.cpu:6.2f} s")
            if rnd >= warmup:
                results[c.id].append(s)
    return results


def run_fixed_cost(
    sc: Scenario, cs: list[Contender], t: Target, work: Path, warmup: int, reps: int
) -> dict[str, list[Sample]]:
    """The fixed cost of one command: a warm download of a 3-byte object (put once,
    not measured) into a new file, whole command, interleaved rounds. The warm-up
    round fills the credential cache of a contender that keeps its own."""
    active = [c for c in cs if c.tiny_download is not None]
    results: dict[str, list[Sample]] = {c.id: [] for c in active}
    body = b"abc"
    remote = f"bench/{sc.id}/tiny.bin"
    t.admin.put_object(Bucket=t.bucket, Key=t.prefix + remote, Body=body)
    try:
        for rnd in range(warmup + reps):
            counted = rnd >= warmup
            for c in _order(active, rnd):
                dest = work / f"tiny-{c.id}-{rnd}.bin"
                argv = c.tiny_download(remote, str(dest))  # type: ignore[misc]
                try:
                    s = measured_run(t, c, argv)
                except CommandFailed as exc:
                    _record_failure(results, sc, c, rnd, exc)
                    continue
                finally:
                    got = dest.read_bytes() if dest.exists() else None
                    with contextlib.suppress(FileNotFoundError):
                        dest.unlink()
                _record_round(results, sc, c, rnd, s, ok=got == body, counted=counted)
    finally:
        _delete_prefix(t, remote)
    return results


def run_presign_many(t: Target, base: dict[str, str], n: int, reps: int) -> dict[str, Any]:
    """URLs per second, measured inside each process around the signing loop only."""
    script = str(HERE / "presign_rate.py")
    envs = {"boto3": _aws_env(base, t)}
    # 10 min: within the platform's 15-min STS credentials; "stsb-1h" (reported, no
    # target) shows what asking for more than the credentials have left costs
    cmds = {"boto3": [PY, script, "boto3", t.bucket, t.prefix, str(n), "600"]}
    if t.mode == "platform":
        e = dict(base)
        e.update(t.sts_env)
        envs["stsb"] = envs["stsb-1h"] = e
        cmds["stsb"] = [PY, script, "sts-bridge", t.workspace, str(n), "600"]
        cmds["stsb-1h"] = [PY, script, "sts-bridge", t.workspace, str(n), "3600"]
    rates: dict[str, list[float]] = {k: [] for k in cmds}
    identical: bool | None = None
    detail: dict[str, Any] = {}
    for rnd in range(reps + 1):
        for k in list(cmds) if rnd % 2 == 0 else list(reversed(cmds)):
            # round 0 (not counted) also proves the URLs byte-identical to botocore's
            argv = [*cmds[k], "--check"] if rnd == 0 and k == "stsb" else cmds[k]
            s = run_measured(argv, env=envs[k])
            doc = json.loads(s.stdout.strip().splitlines()[-1])
            _say(f"  presign_many   {k:<10} r{rnd} {doc['urls_per_s']:10.0f} URLs/s")
            if rnd > 0:  # round 0 warms the page cache and the credential cache
                rates[k].append(doc["urls_per_s"])
            if "identical" in doc:
                identical = bool(doc["identical"])
                detail = {k2: v for k2, v in doc.items() if k2 != "urls_per_s"}
    return {"n": n, "rates": rates, "identical": identical, "detail": detail}


# --------------------------------------------------------------------------- targets
@contextlib.contextmanager
def plain_target(tmp: Path, memstore: int) -> Iterator[Target]:
    from sts_bridge_devstack.s3 import RadosGateway

    with RadosGateway(memstore_bytes=memstore) as rgw:
        access, secret = rgw.create_user("bench-user")
        admin = rgw.client("s3", access, secret)
        admin.create_bucket(Bucket="bench")
        yield Target(
            mode="plain",
            endpoint=rgw.endpoint_url,
            region=rgw.region,
            bucket="bench",
            prefix="",
            admin=admin,
            aws_creds=lambda: {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret},
            gc=lambda: rgw_gc(rgw),
        )


def rgw_gc(rgw: Any) -> None:
    """Run radosgw's garbage collector now: memstore keeps deleted objects' tails in RAM
    until GC, and a full run writes tens of GiB in total."""
    try:
        rgw.gc()
    except Exception as exc:
        _say(f"bench: radosgw gc failed ({exc}); memstore may fill up")


def sdk_available() -> bool:
    try:
        import sts_bridge
    except ImportError:
        return False
    return (
        hasattr(sts_bridge, "upload_to_workspace")
        and importlib.util.find_spec("sts_bridge_devstack.platform") is not None
    )


# --------------------------------------------------------------------------- main
def summarize(samples: list[Sample]) -> dict[str, Any]:
    good = [s for s in samples if s.rc == 0]
    d: dict[str, Any] = {"runs": len(samples), "failed": len(samples) - len(good)}
    for f in ("wall", "cpu", "rss"):
        vals = [getattr(s, f) for s in good]
        if vals:
            d[f] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    d["samples"] = [s.as_dict() for s in samples]
    return d


def scenario_report(
    sc: Scenario,
    cs: list[Contender],
    res: dict[str, list[Sample]],
    label: str,
) -> dict[str, Any]:
    """The report's entry for one scenario: its description and, per contender
    that ran it, its label (the ``label`` field, e.g. ``batch_label``, when not
    empty, else ``Contender.label``) and the summary of its samples."""
    return {
        "id": sc.id,
        "label": sc.label,
        "kind": sc.kind,
        "bytes": sc.size,
        "objects": sc.objects,
        "results": {
            c.id: {"label": getattr(c, label) or c.label, "sts": c.sts, **summarize(res[c.id])}
            for c in cs
            if c.id in res
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64 MiB, 200 files, 1 repetition")
    p.add_argument("--plain", action="store_true", help="bare radosgw, no sts-bridge contenders")
    p.add_argument("--reps", type=int, help="counted repetitions (default 3; quick 1)")
    p.add_argument("--warmup", type=int, help="warm-up rounds (default 1; quick 0)")
    p.add_argument("--size-mib", type=int, help="the large file (default 1024; quick 64)")
    p.add_argument("--small-size-mib", type=int, help="the RSS-flatness file (default 100)")
    p.add_argument("--small-count", type=int, help="number of 64 KiB files (default 2000)")
    p.add_argument("--few-count", type=int, help="the smaller file set (default 500)")
    p.add_argument("--presign-n", type=int, help="keys for presign_many (default 10000)")
    p.add_argument(
        "--cpu-size-mb",
        type=int,
        help="the upload of the CPU row against boto3, MB of 10^6 bytes (default 300; quick 32)",
    )
    p.add_argument(
        "--fixed-rounds",
        type=int,
        help="counted rounds of the fixed-cost row, a warm 3-byte download (default 20; quick 5)",
    )
    p.add_argument(
        "--only",
        default="",
        help="comma list of scenarios: up,up_over,down,down_over,up_cpu,up_small,down_small,"
        "many,few,resync,fixed,presign,presign_many,batch_presign,batch_up,batch_down,"
        "requests,profile",
    )
    p.add_argument(
        "--contenders",
        default="",
        help="comma list of contender ids (stsb-sdk,stsb-sdk-50m,stsb-sdk-direct,stsb-cli,"
        "stsb-base,boto3,boto3-32t,aws,s5cmd): "
        "a shorter run on a busy machine (default: all)",
    )
    p.add_argument("--out", default=str(HERE / "results"), help="results folder")
    a = p.parse_args(argv)
    quick = a.quick
    reps = a.reps if a.reps is not None else (1 if quick else 3)
    warmup = a.warmup if a.warmup is not None else (0 if quick else 1)
    big = (a.size_mib or (64 if quick else 1024)) * MiB
    mid = (a.small_size_mib or (16 if quick else 100)) * MiB
    count = a.small_count or (200 if quick else 2000)
    few = a.few_count or (50 if quick else 500)
    presign_n = a.presign_n or (2000 if quick else 10000)
    cpu_size = (a.cpu_size_mb or (32 if quick else 300)) * 1000 * 1000
    fixed_rounds = a.fixed_rounds or (5 if quick else 20)
    # `run` batches: presigns, small uploads, downloads (counts, object sizes)
    batch_presigns = 100 if quick else 1000
    batch_uploads, batch_upload_size = (100 if quick else 1000), 16 * KiB
    batch_downloads, batch_download_size = (20 if quick else 100), 1 * MiB
    only = {x.strip() for x in a.only.split(",") if x.strip()}

    def want(x: str) -> bool:
        return not only or x in only

    aws, s5 = _tools.aws_cli(), _tools.s5cmd()
    compile_sources()
    mode = "plain" if a.plain or not sdk_available() else "platform"
    if mode == "plain" and not a.plain:
        _say("bench: the sts-bridge SDK/platform is not there yet: plain radosgw, no sts-bridge")
    started = dt.datetime.now(dt.timezone.utc)
    report: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "mode": mode,
        "quick": quick,
        "machine": _tools.machine(),
        "versions": _tools.versions(aws, s5),
        "params": {
            "reps": reps,
            "warmup": warmup,
            "large_bytes": big,
            "mid_bytes": mid,
            "small_count": count,
            "few_count": few,
            "small_bytes": 64 * KiB,
            "presign_n": presign_n,
            "cpu_upload_bytes": cpu_size,
            "fixed_rounds": fixed_rounds,
            "fixed_cost_baseline": _tools.FIXED_COST_BASELINE,
            "batch": [batch_presigns, batch_uploads, batch_downloads],
        },
        "scenarios": [],
    }
    scenarios = [
        Scenario("up", f"upload {_report.human(big)} to a new key", "upload", big),
        Scenario(
            "up_over",
            f"upload {_report.human(big)} over an existing object",
            "upload",
            big,
            over=True,
        ),
        Scenario("down", f"download {_report.human(big)} into a new file", "download", big),
        Scenario(
            "down_over",
            f"download {_report.human(big)} over an existing file",
            "download",
            big,
            over=True,
        ),
        Scenario("up_cpu", f"upload {_report.human(cpu_size)} to a new key", "upload", cpu_size),
        Scenario("many", f"upload {count:,} x 64 KiB", "upload_many", count * 64 * KiB, count),
        Scenario("up_small", f"upload {_report.human(mid)} to a new key", "upload", mid),
        Scenario("down_small", f"download {_report.human(mid)} into a new file", "download", mid),
        Scenario("few", f"upload {few:,} x 64 KiB", "upload_many", few * 64 * KiB, few),
        Scenario(
            "resync",
            f"re-sync an unchanged {count:,}-file tree",
            "resync",
            count * 64 * KiB,
            count,
        ),
    ]
    memstore = max(4 << 30, 3 * big + count * 64 * KiB + (512 << 20))
    tmp = Path(tempfile.mkdtemp(prefix="sts-bridge-bench-"))
    t0 = time.monotonic()
    try:
        _say(f"bench: making test files in {tmp}")
        files = {
            "big": tmp / "big.bin",
            "big_other": tmp / "big-other.bin",  # same size, other bytes: what *_over replace
            "cpu": tmp / "cpu.bin",
            "mid": tmp / "mid.bin",
            "small": tmp / "small",
            "few": tmp / "few",
        }
        if want("up") or want("down") or want("up_over") or want("down_over"):
            make_file(files["big"], big)
        if want("up_over") or want("down_over"):
            make_file(files["big_other"], big)
        if want("up_cpu"):
            make_file(files["cpu"], cpu_size)
        if want("up_small") or want("down_small"):
            make_file(files["mid"], mid)
        if want("many") or want("resync"):
            make_small_files(files["small"], count, 64 * KiB)
        if want("few"):
            make_small_files(files["few"], few, 64 * KiB)
        files["batch_up"] = tmp / "batch-up"
        files["batch_down"] = tmp / "batch-down"
        if want("batch_up"):
            make_small_files(files["batch_up"], batch_uploads, batch_upload_size)
        if want("batch_down"):
            make_small_files(files["batch_down"], batch_downloads, batch_download_size)
        work = tmp / "work"
        work.mkdir()
        ctx = platform_target(tmp, memstore) if mode == "platform" else plain_target(tmp, memstore)
        with ctx as t:
            baseline = None
            if mode == "platform" and want("fixed"):
                try:
                    baseline = _tools.sts_bridge_cli_at(_tools.FIXED_COST_BASELINE)
                except Exception as exc:  # no network, a shallow clone: the row runs without it
                    _say(f"bench: no baseline CLI at {_tools.FIXED_COST_BASELINE}: {exc}")
            cs = contenders(t, tmp, aws, s5, baseline)
            picked = {x.strip() for x in a.contenders.split(",") if x.strip()}
            if picked:
                cs = [c for c in cs if c.id in picked]
                for cid in sorted(picked):
                    knob = knob_contender(t, _base_env(tmp), cid)
                    if knob is not None:
                        cs.append(knob)
            base = _base_env(tmp)
            src_of = {
                "up": "big",
                "up_over": "big",
                "down": "big",
                "down_over": "big",
                "up_cpu": "cpu",
                "many": "small",
                "up_small": "mid",
                "down_small": "mid",
                "few": "few",
                "resync": "small",
            }
            for sc in scenarios:
                if not want(sc.id):
                    continue
                _say(f"bench: {sc.label} ({warmup} warm-up + {reps} rounds)")
                if sc.kind == "resync":
                    res = run_resync(sc, cs, t, files[src_of[sc.id]], warmup, reps)
                else:
                    other = files["big_other"] if sc.over else None
                    res = run_scenario(sc, cs, t, files[src_of[sc.id]], work, warmup, reps, other)
                label = "sync_label" if sc.kind == "resync" else "label"
                report["scenarios"].append(scenario_report(sc, cs, res, label))
            batches = [
                Scenario(
                    "batch_presign",
                    f"run: {batch_presigns:,} presigns",
                    "batch",
                    0,
                    batch_presigns,
                ),
                Scenario(
                    "batch_up",
                    f"run: {batch_uploads:,} uploads x {batch_upload_size // KiB} KiB",
                    "batch",
                    batch_uploads * batch_upload_size,
                    batch_uploads,
                ),
                Scenario(
                    "batch_down",
                    f"run: {batch_downloads:,} downloads x {_report.human(batch_download_size)}",
                    "batch",
                    batch_downloads * batch_download_size,
                    batch_downloads,
                ),
            ]
            for sc, op in zip(batches, ("presign", "upload", "download"), strict=True):
                if not want(sc.id):
                    continue
                _say(f"bench: {sc.label} ({warmup} warm-up + {reps} rounds)")
                res = run_batch(sc, cs, t, op, files.get(sc.id, tmp), work, warmup, reps)
                report["scenarios"].append(scenario_report(sc, cs, res, "batch_label"))
            if want("fixed"):
                fixed = Scenario(
                    "fixed", "fixed cost: warm download of a 3-byte object", "fixed", 3, 1
                )
                fwarm = max(warmup, 1)  # fills the baseline's own credential cache
                _say(f"bench: {fixed.label} ({fwarm} warm-up + {fixed_rounds} rounds)")
                res = run_fixed_cost(fixed, cs, t, work, fwarm, fixed_rounds)
                report["scenarios"].append(scenario_report(fixed, cs, res, "label"))
            if want("presign"):
                preps = max(reps, 3) if not quick else 1
                _say(f"bench: presign, one command ({warmup} warm-up + {preps} rounds)")
                res = run_presign_cli(cs, t, max(warmup, 1), preps)
                presign = Scenario("presign", "presign one URL (whole command)", "presign", 0, 1)
                report["scenarios"].append(scenario_report(presign, cs, res, "presign_label"))
            if want("presign_many"):
                _say(f"bench: presign_many on {presign_n:,} keys")
                report["presign_many"] = run_presign_many(t, base, presign_n, max(reps, 3))
            if want("profile") and mode == "platform":
                if not files["big"].exists():
                    make_file(files["big"], big)
                _say("bench: where the SDK upload's client CPU goes")
                report["profile"] = run_profile(t, files["big"], big, max(reps, 1))
            if want("requests") and mode == "platform":
                _say("bench: requests made by a cold and a warm `sts-bridge upload`")
                report["requests"] = run_request_counts(t, base, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["duration_s"] = round(time.monotonic() - t0, 1)
    report["machine"]["load_avg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report["targets"] = _report.targets(report)
    md = _report.markdown(report)
    print(md)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # a partial (--only) or --quick run never replaces the full results
    stem = "quick" if quick else ("partial" if only else "latest")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / f"{stem}.md").write_text(md)
    _say(f"bench: wrote {out / (stem + '.md')} and {stem}.json")
    if not quick and not only:
        for readme in (HERE / "README.md", HERE.parent / "README.md"):
            if _report.update_readme(readme, md):
                _say(f"bench: refreshed the table in {readme}")
    return 0


# ---------------------------------------------------------------- platform mode (sts-bridge)
SERVICE_WORKSPACE = "gep-processing-results-a2s-service-workspace"


def _parse_env_block(text: str) -> dict[str, str]:
    """``export K=V`` / ``K=V`` lines (shell-quoted values) -> dict."""
    import shlex

    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        k, _, v = line.partition("=")
        parts = shlex.split(v) if v else [""]
        out[k.strip()] = parts[0] if parts else ""
    return out


class ToolCredentials:
    """The workspace's STS credentials for boto3/aws/s5cmd, from
    ``sts-bridge credentials WORKSPACE --format env`` (re-read a minute before they expire)."""

    def __init__(self, env: dict[str, str], workspace: str) -> None:
        self.env = env
        self.workspace = workspace
        self.value: dict[str, str] = {}
        self.expires = 0.0

    def __call__(self) -> dict[str, str]:
        if time.time() > self.expires - 60:
            cli = str(VENV_BIN / "sts-bridge")
            s = run_measured([cli, "credentials", self.workspace, "--format", "env"], env=self.env)
            got = _parse_env_block(s.stdout)
            self.value = {
                k: got[k]
                for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
                if k in got
            }
            exp = got.get("AWS_CREDENTIAL_EXPIRATION")
            self.expires = (
                dt.datetime.fromisoformat(exp.replace("Z", "+00:00")).timestamp()
                if exp
                else time.time() + 600
            )
        return self.value


class WorkspaceS3:
    """The harness's own S3 client (checks and clean-up, never measured), with the
    workspace credentials: objects written by the role session are not readable
    by the bucket's owner, so the radosgw admin cannot check them."""

    def __init__(self, creds: ToolCredentials, endpoint: str, region: str) -> None:
        self.creds, self.endpoint, self.region = creds, endpoint, region
        self._client: Any = None
        self._key: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        c = self.creds()
        key = tuple(sorted(c.values()))
        if self._client is None or key != self._key:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                aws_access_key_id=c["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=c["AWS_SECRET_ACCESS_KEY"],
                aws_session_token=c.get("AWS_SESSION_TOKEN"),
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
            )
            self._key = key
        return getattr(self._client, name)


@contextlib.contextmanager
def platform_target(tmp: Path, memstore: int) -> Iterator[Target]:
    from sts_bridge_devstack.platform import LocalPlatform

    _say("bench: starting the local platform (IdP + TerrAPI API + radosgw)")
    with LocalPlatform() as plat:
        _say(f"bench: platform up in {plat.start_seconds:.1f} s")
        sts_env = {k: v for k, v in plat.env().items() if k.startswith("TERRAPI_")}
        sts_env["STS_BRIDGE_CACHE_DIR"] = str(tmp / "sts-bridge-cache")
        sts_env["TERRAPI_WORKSPACE"] = SERVICE_WORKSPACE
        env = _base_env(tmp)
        env.update(sts_env)
        # the workspace's storage point, as the SDK sees it (this also warms the cache)
        probe = (
            "import json; from sts_bridge import Client; "
            f"w = Client.from_env().workspace({SERVICE_WORKSPACE!r}); w.credentials(); "
            "print(json.dumps({'bucket': w.bucket, 'prefix': w.prefix, "
            "'endpoint': w.endpoint_url, 'region': w.region}))"
        )
        sp = json.loads(run_measured([PY, "-c", probe], env=env).stdout.strip().splitlines()[-1])
        creds = ToolCredentials(env, SERVICE_WORKSPACE)
        yield Target(
            mode="platform",
            endpoint=sp["endpoint"],
            region=sp["region"],
            bucket=sp["bucket"],
            prefix=sp["prefix"],
            admin=WorkspaceS3(creds, sp["endpoint"], sp["region"]),
            aws_creds=creds,
            sts_env=sts_env,
            workspace=SERVICE_WORKSPACE,
            platform=plat,
            gc=lambda: rgw_gc(plat.s3),
            owner=plat.s3.client("s3"),
        )


def _counts(plat: Any) -> dict[str, Any]:
    """Requests counted on the API and the IdP since the last reset.

    radosgw itself fetches the issuer's discovery document and JWKS on every
    AssumeRoleWithWebIdentity (shared/reference/local-platform.md), so each STS
    exchange the API makes costs 2 IdP requests that sts-bridge did not make:
    ``idp_client`` is the IdP count without them (``idp`` is the raw count).
    """
    api, idp = plat.api_stats(), plat.idp_stats()
    by_path = idp.get("by_path", {})
    exchanges = int(api.get("sts_exchanges", 0))
    server_side = min(
        2 * exchanges,
        sum(n for p, n in by_path.items() if "openid-configuration" in p or "jwks" in p),
    )
    total = int(idp.get("total", 0))
    return {
        "api": int(api.get("total", 0)),
        "idp": total,
        "idp_client": total - server_side,
        "sts_exchanges": exchanges,
        "api_by_path": api.get("by_path", {}),
        "idp_by_path": by_path,
    }


def run_profile(t: Target, src: Path, size: int, reps: int) -> dict[str, Any]:
    """Upload CPU split by subtraction: start+imports, +workspace/credentials, SHA-256."""
    base = _base_env(Path(tempfile.gettempdir()))
    env = dict(base)
    env.update(t.sts_env)
    sdk = [PY, str(HERE / "stsb_sdk.py")]
    steps = {
        "import": [*sdk, "import"],
        "setup": [*sdk, "setup", t.workspace],
        "sha256": [*sdk, "sha256", str(src)],
        "upload": [*sdk, "upload", t.workspace, str(src), "bench/profile/big.bin"],
    }
    got: dict[str, list[Sample]] = {k: [] for k in steps}
    for rnd in range(reps + 1):
        for k, argv in steps.items():
            s = run_measured(argv, env=env)
            if k == "upload":
                _delete_prefix(t, "bench/profile/")
                t.gc()
            _say(f"  profile        {k:<10} r{rnd} wall {s.wall:7.3f} s  cpu {s.cpu:6.2f} s")
            if rnd > 0:
                got[k].append(s)
    return {"bytes": size, "steps": {k: summarize(v) for k, v in got.items()}}


def run_request_counts(t: Target, base: dict[str, str], tmp: Path) -> dict[str, Any]:
    """API and IdP requests of `sts-bridge upload`, counted on the servers: first with
    an empty cache folder (cold), then again with the cache it left (warm)."""
    src = tmp / "requests.bin"
    src.write_bytes(os.urandom(64 * KiB))
    env = dict(base)
    env.update(t.sts_env)
    env["STS_BRIDGE_CACHE_DIR"] = str(tmp / "cold-cache")
    cli = str(VENV_BIN / "sts-bridge")
    out: dict[str, Any] = {}
    for name in ("cold", "warm"):
        t.platform.reset_stats()
        s = run_measured(
            [
                cli,
                "-q",
                "upload",
                str(src),
                "--to",
                f"bench/requests/{name}.bin",
                "--workspace",
                t.workspace,
            ],
            env=env,
        )
        out[name] = {**_counts(t.platform), "wall": s.wall}
        _say(
            f"  requests       {name:<10} API {out[name]['api']}  IdP {out[name]['idp']} "
            f"(by sts-bridge: {out[name]['idp_client']})"
        )
    _delete_prefix(t, "bench/requests/")
    return out


if __name__ == "__main__":
    sys.exit(main())
