"""`make user-env`: install sts-bridge into a data-stack environment as a user does.

A pangeo or conda user installs into the environment they already have,
with the pip it came with and no lock. This builds that environment from
the registries (a venv made by ``python3 -m venv``, then the newest s3fs,
xarray, zarr, pandas, pyarrow, dask and rasterio), installs this checkout
with ``pip install '.[fsspec,dask]'`` (no constraints), runs ``pip check``,
and then a ``workspace://`` round trip (fsspec, pandas, xarray/zarr) in that
environment against the local platform. It prints one line per step and
what pip chose; any failure ends it with exit 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .platform import LocalPlatform

ROOT = Path(__file__).resolve().parent.parent

#: what a data-stack user already has before installing sts-bridge
DATA_STACK = ("s3fs", "xarray", "zarr", "pandas", "pyarrow", "dask", "distributed", "rasterio")
#: what the report lists of the final environment
REPORTED = ("pip", "sts-bridge", "botocore", "aiobotocore", "s3fs", "fsspec", *DATA_STACK[1:])

ROUND_TRIP = """
import uuid, fsspec, pandas, xarray, numpy
import sts_bridge
from sts_bridge import Client
ws = Client.from_env().workspace()
base = f"workspace://{ws.name}/user-env/{uuid.uuid4().hex}"
fs = fsspec.filesystem("workspace")
fs.pipe_file(f"{base}/hello.txt", b"hello")
assert fs.cat_file(f"{base}/hello.txt") == b"hello"
frame = pandas.DataFrame({"a": [1, 2, 3]})
frame.to_csv(f"{base}/frame.csv", index=False)
assert pandas.read_csv(f"{base}/frame.csv")["a"].tolist() == [1, 2, 3]
data = xarray.Dataset({"v": ("x", numpy.arange(10))})
data.to_zarr(f"{base}/cube.zarr", mode="w")
assert int(xarray.open_zarr(f"{base}/cube.zarr")["v"].sum()) == 45
fs.rm(base, recursive=True)
print(f"round trip: sts-bridge {sts_bridge.__version__}: fsspec, pandas and xarray/zarr on {base}")
"""


def _step(message: str) -> None:
    print(f"user-env: {message}", file=sys.stderr, flush=True)


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    _step("$ " + " ".join(args))
    started = time.monotonic()
    proc = subprocess.run(args, text=True, capture_output=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"user-env: failed (exit {proc.returncode}): {' '.join(args)}")
    _step(f"  ok in {time.monotonic() - started:.0f} s")
    return proc


def run(python: str, keep: bool) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="sts-bridge-user-env-"))
    venv = tmp / "venv"
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    try:
        _run([python, "-m", "venv", str(venv)])
        _run([*pip, "--version"])
        _run([*pip, "install", "--quiet", *DATA_STACK])
        _run([*pip, "install", "--quiet", f"{ROOT}[fsspec,dask]"])
        _run([*pip, "check"])
        listed = _run([*pip, "list", "--format=freeze"]).stdout.splitlines()
        wanted = {name.lower() for name in REPORTED}
        chosen = [line for line in listed if line.split("==")[0].lower() in wanted]
        _step("installed: " + ", ".join(sorted(chosen)))
        _step("starting the local platform ...")
        with LocalPlatform() as platform:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("TERRAPI_", "STS_"))}
            env.update(platform.env())
            env["STS_BRIDGE_CACHE_DIR"] = str(tmp / "cache")
            env["STS_BRIDGE_CONFIG_FILE"] = str(tmp / "no-config")
            env["TERRAPI_FLOW"] = "client-credentials"
            out = _run([str(venv / "bin" / "python"), "-c", ROUND_TRIP], env=env, cwd=tmp)
            _step(out.stdout.strip())
        _step("passed")
        return 0
    finally:
        if keep:
            _step(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sts_bridge_devstack.user_env")
    parser.add_argument("--python", default="python3", help="the interpreter to make the venv")
    parser.add_argument("--keep", action="store_true", help="keep the environment afterwards")
    args = parser.parse_args(argv)
    return run(args.python, args.keep)


if __name__ == "__main__":
    sys.exit(main())
