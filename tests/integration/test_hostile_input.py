"""What other people can put in front of sts-bridge: keys written by other
tools into a shared workspace, and local processes poking the credentials
server."""

from __future__ import annotations

import json
import socket
import struct
import sys
import uuid
from pathlib import Path

import pytest

from sts_bridge import Client
from sts_bridge.cli import main

pytestmark = pytest.mark.integration

HOSTILE = "evil\x1b[31mred\x1b[0m\nforged-line\r\u2028tab\there\\x41"


def test_ls_escapes_keys_that_hold_control_characters(
    platform_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STS_BRIDGE_CONFIG_FILE", str(tmp_path / "no-config"))
    ws = Client.from_env().workspace()
    base = f"hostile/{uuid.uuid4().hex}/"
    s3 = ws.s3_client()  # another tool: no key checks
    s3.put_object(Bucket=ws.bucket, Key=ws.prefix + base + HOSTILE, Body=b"x")
    s3.put_object(Bucket=ws.bucket, Key=ws.prefix + base + "sub\x07/inner", Body=b"y")
    try:
        for argv in (["ls", base], ["ls", base, "-r"]):
            assert main(argv) == 0
            out = capsys.readouterr().out
            lines = out.splitlines()
            assert len(lines) == 2, out  # the newline in the key forged no line
            assert not any(c in out for c in "\x1b\r\x07\u2028\t")
            assert "evil\\x1b[31mred\\x1b[0m\\nforged-line\\r\\u2028tab\\there\\\\x41" in out
        assert main(["ls", base, "--json"]) == 0
        docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert base + HOSTILE in [d["key"] for d in docs]  # --json stays exact
    finally:
        for key in (base + HOSTILE, base + "sub\x07/inner"):
            s3.delete_object(Bucket=ws.bucket, Key=ws.prefix + key)


def test_credentials_server_ignores_clients_that_hang_up(
    platform_env: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    from urllib.request import Request, urlopen

    from sts_bridge.interop.container_credentials import ContainerCredentialsServer

    ws = Client.from_env().workspace()
    with ContainerCredentialsServer(ws) as server:
        env = server.env()
        host, port = server.url.split("//")[1].split("/")[0].split(":")
        for attempt in range(20):
            sock = socket.create_connection((host, int(port)), timeout=5)
            if attempt % 2:
                sock.sendall(b"GET /credentials HTTP/1.1\r\nHost: x\r\n\r\n")
            else:
                sock.sendall(b"GET /creden")  # half a request line
            # reset instead of a clean close: the server's next read or write fails
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        request = Request(
            env["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
            headers={"Authorization": env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]},
        )
        with urlopen(request, timeout=10) as answer:
            assert json.load(answer)["AccessKeyId"]
    err = capfd.readouterr().err
    sys.stderr.write(err)
    assert "Traceback" not in err
    assert err.count("\n") <= 20  # one short line per broken client at most
