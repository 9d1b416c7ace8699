"""`make demo`: the main job of sts-bridge, end to end, on the local platform.

Starts the local platform, then runs the `sts-bridge` CLI the way a user
would: log in as the demo service, find its workspace, upload a generated
file with a progress bar, presign it, download the URL with plain HTTP,
check the bytes, and stop the platform. Every command it runs is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .platform import LocalPlatform

CHUNK = 8 * 1024 * 1024


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cli(args: list[str], env: dict[str, str], *, capture: bool = False) -> str:
    _say(f"\n$ sts-bridge {shlex.join(args)}")
    proc = subprocess.run(
        [sys.executable, "-m", "sts_bridge", *args],
        env=env,
        stdout=subprocess.PIPE if capture else None,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"demo: `sts-bridge {args[0]}` failed with exit code {proc.returncode}")
    if capture:
        out = proc.stdout
        sys.stdout.write(out)
        sys.stdout.flush()
        return out
    return ""


def _make_file(path: Path, size: int) -> str:
    """A file of pseudo-random bytes (incompressible, cheap to make); its SHA-256."""
    digest = hashlib.sha256()
    block = hashlib.shake_256(b"sts-bridge demo").digest(CHUNK)
    written = 0
    with path.open("wb") as out:
        counter = 0
        while written < size:
            # vary every block so no two parts are alike
            chunk = counter.to_bytes(8, "big") + block[8:]
            chunk = chunk[: size - written]
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            counter += 1
    return digest.hexdigest()


def _fetch_sha256(url: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (http on loopback)
        while chunk := response.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def run(size_mb: int) -> int:
    started = time.monotonic()
    _say("demo: starting the local platform (identity provider, TerrAPI, radosgw) ...")
    with LocalPlatform() as platform, tempfile.TemporaryDirectory(prefix="sts-bridge-demo-") as tmp:
        _say(f"demo: platform up in {platform.start_seconds:.1f} s")
        _say(f"demo:   identity provider  {platform.issuer}")
        _say(f"demo:   TerrAPI            {platform.api_url}")
        _say(f"demo:   S3 (radosgw)       {platform.s3_endpoint}")
        env = dict(os.environ)
        env.update(platform.env())
        env["STS_BRIDGE_CACHE_DIR"] = str(Path(tmp) / "cache")
        env["STS_BRIDGE_CONFIG_FILE"] = str(Path(tmp) / "no-config")
        _say(
            "demo: configured by environment: TERRAPI_URL, TERRAPI_ISSUER, "
            "TERRAPI_CLIENT_ID, TERRAPI_CLIENT_SECRET (the demo service client)"
        )

        _cli(["login", "--flow", "client-credentials"], env)
        _cli(["whoami"], env)
        _cli(["workspaces"], env)

        source = Path(tmp) / "results.bin"
        _say(f"\ndemo: generating {size_mb} MB of data in {source.name} ...")
        expected = _make_file(source, size_mb * 1024 * 1024)
        key = f"demo/{time.strftime('%Y%m%dT%H%M%S')}/results.bin"

        _cli(["upload", str(source), "--to", key], env)
        url = _cli(["presign", key, "--expires-in", "1h"], env, capture=True).strip()
        if not url.startswith("http"):
            raise SystemExit(f"demo: presign printed no URL: {url!r}")

        _say("\ndemo: downloading the presigned URL with plain HTTP (urllib, no credentials) ...")
        got, size = _fetch_sha256(url)
        if got != expected or size != source.stat().st_size:
            _say(f"demo: FAILED: downloaded {size} bytes with sha256 {got}, expected {expected}")
            return 1
        _say(f"demo: verified {size:,} bytes, sha256 {got[:16]}... matches the upload")
        stats = platform.api_stats()
        _say(f"demo: the API served {stats.get('total', '?')} requests")
    _say(f"demo: done in {time.monotonic() - started:.1f} s; the platform is stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sts_bridge_devstack demo")
    parser.add_argument("--size-mb", type=int, default=300, help="size of the demo file")
    args = parser.parse_args(argv)
    return run(args.size_mb)


if __name__ == "__main__":
    sys.exit(main())
