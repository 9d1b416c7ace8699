"""The secrets sweep: no client secret, access/refresh/ID token, STS access
key id, secret key or session token in any output or log record of any
command (with and without ``--debug``), nor in the log records of the Python
API with DEBUG logging on for every logger. Caches are 0600 files in 0700
directories.

The secrets are the real ones of this run (read back from the caches and
the objects at the end), so a leak of any shape is caught, not only the
shapes a pattern knows. Commands whose job is to print a secret (``token``,
``credentials``, ``presign``: a URL carries its key id and session token)
are checked on stderr and in the logs only, and prove the check can fail:
their stdout must contain one of the secrets.
"""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sts_bridge.cli import main
from sts_bridge.s3.config import TransferConfig

pytestmark = pytest.mark.integration


def _approve_as(platform: Any, username: str) -> Any:
    idp = platform.idp

    def prompt(auth: Any) -> None:
        threading.Thread(
            target=idp.approve_device,
            args=(auth.user_code, username, platform.users[username]),
            daemon=True,
        ).start()

    return prompt


class Recorder(logging.Handler):
    """Every log record, as a handler placed on the root logger would see it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            text += record.exc_text
        self.texts.append(f"{record.name}: {text}")


@pytest.fixture(scope="module")
def sweep(local_platform: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A user environment (device login as alice) and a service environment."""
    home = tmp_path_factory.mktemp("sweep")
    user_env = {
        "TERRAPI_URL": local_platform.api_url,
        "TERRAPI_ISSUER": local_platform.issuer,
        "TERRAPI_AUDIENCE": local_platform.audience,
        "TERRAPI_SCOPES": local_platform.scopes,
        "TERRAPI_CLIENT_ID": local_platform.cli_client_id,
        "STS_BRIDGE_CACHE_DIR": str(home / "user-cache"),
        "STS_BRIDGE_CONFIG_FILE": str(home / "no-config"),
    }
    service_env = dict(local_platform.env())
    service_env["STS_BRIDGE_CACHE_DIR"] = str(home / "service-cache")
    service_env["STS_BRIDGE_CONFIG_FILE"] = str(home / "no-config")
    for name in list(service_env):
        if name.startswith("STS_BRIDGE_DEVSTACK_"):
            del service_env[name]
    yield {"platform": local_platform, "home": home, "user": user_env, "service": service_env}


class Environ:
    """Swap the TERRAPI_* / STS_BRIDGE_* / AWS_* block of os.environ for a test's own."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.saved: dict[str, str] = {}

    def __enter__(self) -> None:
        self.saved = dict(os.environ)
        for name in list(os.environ):
            if name.startswith(("TERRAPI_", "STS_BRIDGE_", "AWS_")):
                del os.environ[name]
        os.environ.update(self.env)

    def __exit__(self, *exc: object) -> None:
        os.environ.clear()
        os.environ.update(self.saved)


def secrets_in(cache_dir: Path) -> set[str]:
    """Every token and STS value held in a cache directory."""
    found: set[str] = set()

    def walk(doc: Any) -> None:
        if isinstance(doc, dict):
            for name, value in doc.items():
                if isinstance(value, str) and name in (
                    "access_token",
                    "refresh_token",
                    "id_token",
                    "access_key",
                    "secret_key",
                    "token",
                    "AccessKeyId",
                    "SecretAccessKey",
                    "SessionToken",
                ):
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(doc, list):
            for item in doc:
                walk(item)

    for path in cache_dir.rglob("*.json"):
        walk(json.loads(path.read_text()))
    return {s for s in found if len(s) >= 8}


def assert_private(cache_dir: Path) -> None:
    modes = {cache_dir: stat.S_IMODE(cache_dir.stat().st_mode)}
    for path in cache_dir.rglob("*"):
        modes[path] = stat.S_IMODE(path.stat().st_mode)
    for path, mode in modes.items():
        wanted = 0o700 if path.is_dir() else 0o600
        assert mode == wanted, f"{path} is {mode:04o}, not {wanted:04o}"


def assert_absent(secrets: set[str], texts: dict[str, str]) -> None:
    assert secrets
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({len(secret)} chars) leaked into {where}"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = int(main(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# Commands whose stdout is a secret by design: checked on stderr only.
PRINTS_SECRETS = {"token", "credentials", "presign"}


def command_lines(tmp: Path, base: str, workspace: str) -> list[list[str]]:
    src = tmp / "data.bin"
    src.write_bytes(os.urandom(6 * 1024 * 1024 + 5))
    (tmp / "tree" / "sub").mkdir(parents=True)
    (tmp / "tree" / "sub" / "a.txt").write_text("a")
    (tmp / "tree" / "b.txt").write_text("b")
    return [
        ["whoami"],
        ["whoami", "--json"],
        ["token"],
        ["workspaces", "--json"],
        ["workspace", "--json"],
        ["upload", str(src), "--to", base + "data.bin", "--json"],
        ["ls", base],
        ["ls", base, "--recursive", "--json"],
        ["download", base + "data.bin", str(tmp / "copy.bin")],
        ["sync", str(tmp / "tree"), f"workspace://{workspace}/{base}tree/"],
        ["sync", f"workspace://{workspace}/{base}tree/", str(tmp / "tree-copy")],
        ["presign", base + "data.bin", "--expires-in", "10m"],
        ["presign", base + "data.bin", "--json"],
        ["credentials", "--format", "json"],
        ["credentials", "--format", "env"],
        ["credentials", "--format", "credential-process"],
        ["credentials", "--serve", "--", sys.executable, "-c", "print('child ran')"],
        ["rm", base + "data.bin"],
        ["rm", "-r", "-y", base],
    ]


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_every_command_keeps_secrets_out(
    sweep: dict[str, Any],
    debug: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(
        "sts_bridge.auth.device.default_prompt", _approve_as(sweep["platform"], "alice")
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # not a terminal: no prompts
    flag = ["--debug"] if debug else []
    env = dict(sweep["user"])
    env["STS_BRIDGE_CACHE_DIR"] = str(tmp_path / "cache")
    recorder = Recorder()
    logging.getLogger().addHandler(recorder)
    texts: dict[str, str] = {}
    printed_secrets: dict[str, str] = {}
    try:
        with Environ(env):
            code, out, err = run_cli([*flag, "login", "--flow", "device", "--no-browser"], capsys)
            assert code == 0, err
            texts["login"] = out + err
            base = f"sweep/{uuid.uuid4().hex}/"
            workspace = "gep-alice-private-workspace"
            for argv in command_lines(tmp_path, base, workspace):
                code, out, err = run_cli([*flag, *argv], capsys)
                assert code == 0, (argv, err)
                name = " ".join(argv[:2])
                texts[f"stderr of {name}"] = err
                if argv[0] in PRINTS_SECRETS:
                    printed_secrets[name] = out
                else:
                    texts[f"stdout of {name}"] = out
            secrets = secrets_in(tmp_path / "cache")
            code, out, err = run_cli([*flag, "logout"], capsys)
            assert code == 0, err
            texts["logout"] = out + err
    finally:
        logging.getLogger().removeHandler(recorder)
    texts["log records"] = "\n".join(recorder.texts)
    assert len(secrets) >= 6  # access, refresh, ID token; STS key id, secret, session token
    # the check can fail: the commands made to print secrets did print some
    assert any(s in printed_secrets["token"] for s in secrets)
    assert any(s in printed_secrets["credentials --format"] for s in secrets)
    assert_absent(secrets, texts)


@pytest.mark.parametrize("command", [["ls"], ["rm", "-r", "-y", "nothing-here/"]])
def test_debug_as_a_real_process(sweep: dict[str, Any], command: list[str], tmp_path: Path) -> None:
    """The reported reproduction: ``sts-bridge --debug ls 2>&1 | grep x-amz-security-token``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TERRAPI_", "STS_BRIDGE_"))}
    env.update(sweep["service"])
    env["STS_BRIDGE_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run(
        [sys.executable, "-m", "sts_bridge", "--debug", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    secrets = secrets_in(tmp_path / "cache") | {env["TERRAPI_CLIENT_SECRET"]}
    assert len(secrets) >= 4
    assert "x-amz-security-token" not in (result.stdout + result.stderr).lower()
    assert_absent(secrets, {"stdout": result.stdout, "stderr": result.stderr})
    assert_private(tmp_path / "cache")


def test_python_api_with_debug_logging_everywhere(sweep: dict[str, Any], tmp_path: Path) -> None:
    import sts_bridge

    env = dict(sweep["service"])
    env["STS_BRIDGE_CACHE_DIR"] = str(tmp_path / "cache")
    recorder = Recorder()
    root = logging.getLogger()
    saved_levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    saved_root = root.level
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    reprs: list[str] = []
    try:
        with Environ(env):
            for name in list(logging.root.manager.loggerDict):
                logging.getLogger(name).setLevel(logging.DEBUG)
            client = sts_bridge.Client.from_env()
            reprs.append(repr(client))
            ws = client.workspace()
            reprs += [repr(ws), repr(client.settings)]
            base = f"sweep-api/{uuid.uuid4().hex}/"
            data = os.urandom(6 * 1024 * 1024 + 1)
            ws.with_transfer_config(
                TransferConfig(part_size=5 * 1024 * 1024, multipart_threshold=5 * 1024 * 1024)
            ).upload(data, base + "big.bin")
            ws.upload(b"small", base + "small.txt")
            listed = list(ws.list(base, recursive=True))
            assert len(listed) == 2
            ws.download(base + "big.bin", tmp_path / "big.bin")
            assert (tmp_path / "big.bin").read_bytes() == data
            url = ws.presign(base + "small.txt")
            # the boto3 path (botocore signs headers and logs them at DEBUG)
            s3 = ws.s3_client()
            s3.head_object(Bucket=ws.bucket, Key=ws.prefix + base + "small.txt")
            s3.list_objects_v2(Bucket=ws.bucket, Prefix=ws.prefix + base)
            # the fsspec path (s3fs over aiobotocore, which logs like botocore)
            fs = ws.filesystem()
            assert fs.cat_file(ws.url(base + "small.txt")) == b"small"
            assert len(fs.ls(ws.url(base))) == 2
            creds = ws.credentials()
            reprs.append(repr(creds))
            assert ws.delete(base, recursive=True) == 2
            token = client.credentials.token()
    finally:
        root.removeHandler(recorder)
        root.setLevel(saved_root)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
    secrets = secrets_in(tmp_path / "cache") | {
        env["TERRAPI_CLIENT_SECRET"],
        creds.access_key,
        creds.secret_key,
        creds.token or "",
        token if isinstance(token, str) else token.access_token,
    }
    secrets.discard("")
    assert recorder.texts, "DEBUG logging was on: records were expected"
    assert any("botocore" in t for t in recorder.texts)  # the boto3 path did log
    assert creds.access_key in url.url  # the check can fail: a URL carries the key id
    assert_absent(secrets, {"log records": "\n".join(recorder.texts), "reprs": "\n".join(reprs)})
    assert_private(tmp_path / "cache")
