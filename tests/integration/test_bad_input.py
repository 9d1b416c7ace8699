"""The bad-input table: every wrong thing a user can type, export or write
in a profile gives one ``error:`` line, one ``hint:`` line and the
documented exit code (README, "Exit codes"); the Python API raises the
documented exception class. Never a traceback, never "unexpected".

CLI cases run in-process through ``main(argv)`` (fast); a handful run as
real subprocesses to prove the in-process runs mean the same thing. One
local platform serves the whole module, logged in once.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sts_bridge.cli import main

pytestmark = pytest.mark.integration

USAGE, CONFIG, AUTH, FORBIDDEN, NOT_FOUND, API, ERROR = 2, 3, 4, 5, 6, 7, 1

#: Placeholders in argv / env values, filled per test.
TMP = "{tmp}"  # the test's temporary directory
API_URL = "{api}"  # the platform's API URL
ISSUER = "{issuer}"
CLOSED = "{closed}"  # 127.0.0.1:<a port nobody listens on>
PLAIN = "{plain}"  # host:port of the API, for https on a plain-HTTP port
OBJECT = "{object}"  # a key that exists in the workspace


@dataclass(frozen=True)
class Case:
    """One bad input: argv, environment changes (None removes), files to create, outcome."""

    id: str
    argv: tuple[str, ...]
    code: int
    env: dict[str, str | None] = field(default_factory=dict)
    files: dict[str, str | bytes] = field(default_factory=dict)
    needle: str = ""  # a word the error line must contain (case-insensitive)
    secret: str = ""  # a word that must appear nowhere in the output


def case(
    id: str,
    *argv: str,
    code: int,
    env: dict[str, str | None] | None = None,
    files: dict[str, str | bytes] | None = None,
    needle: str = "",
    secret: str = "",
) -> Any:
    return pytest.param(Case(id, argv, code, env or {}, files or {}, needle, secret), id=id)


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(doc: dict[str, Any]) -> str:
        raw = json.dumps(doc).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


EXPIRED_JWT = _unsigned_jwt({"sub": "x", "exp": 1_000_000_000, "iat": 999_999_000})
FUTURE_JWT = _unsigned_jwt({"sub": "x", "exp": int(time.time()) + 3600})
NO_EXP_JWT = _unsigned_jwt({"sub": "x"})
PEM_GARBAGE = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"

# --------------------------------------------------------------- CLI arguments
ARGUMENT_CASES = [
    case("no-command", code=USAGE),
    case("unknown-command", "frobnicate", code=USAGE),
    case("unknown-global-option", "--nope", "ls", code=USAGE),
    case("unknown-command-option", "ls", "--nope", code=USAGE),
    case("passthrough-without-command", "ls", "--", "echo", code=USAGE, needle="--"),
    case("presign-no-key", "presign", code=USAGE),
    case("presign-expires-zero", "presign", "k", "--expires-in", "0", code=USAGE),
    case("presign-expires-half", "presign", "k", "--expires-in", "0.5", code=USAGE),
    case("presign-expires-8d", "presign", "k", "--expires-in", "8d", code=USAGE),
    case("presign-expires-huge", "presign", "k", "--expires-in", "99999999", code=USAGE),
    case("presign-expires-overflow", "presign", "k", "--expires-in", "9" * 400 + "w", code=USAGE),
    case("presign-expires-negative", "presign", "k", "--expires-in", "-5m", code=USAGE),
    case("presign-expires-word", "presign", "k", "--expires-in", "soon", code=USAGE),
    case("presign-expires-empty", "presign", "k", "--expires-in", "", code=USAGE),
    case("presign-expires-unit", "presign", "k", "--expires-in", "3y", code=USAGE),
    case("presign-expires-nan", "presign", "k", "--expires-in", "nan", code=USAGE),
    case("presign-expires-inf", "presign", "k", "--expires-in", "inf", code=USAGE),
    case("presign-method", "presign", "k", "--method", "POST", code=USAGE),
    case("presign-dotdot", "presign", "../etc/passwd", code=USAGE),
    case("presign-absolute", "presign", "/abs/key", code=USAGE),
    case("presign-empty-segment", "presign", "a//b", code=USAGE),
    case("presign-backslash", "presign", "a\\b", code=USAGE),
    case("presign-dot", "presign", ".", code=USAGE),
    case("presign-dot-segment", "presign", "a/./b", code=USAGE),
    case("presign-control-char", "presign", "a\x01b", code=USAGE),
    case("presign-newline", "presign", "a\nb", code=USAGE),
    case("presign-too-long", "presign", "k" * 1100, code=USAGE),
    case("presign-empty-key", "presign", "", code=USAGE),
    case("upload-no-path", "upload", code=USAGE),
    case("upload-missing-file", "upload", TMP + "/does-not-exist", "--to", "x", code=USAGE),
    case(
        "upload-dotdot-key",
        "upload",
        TMP + "/f.txt",
        "--to",
        "../x",
        code=USAGE,
        files={"f.txt": "x"},
    ),
    case(
        "upload-absolute-key",
        "upload",
        TMP + "/f.txt",
        "--to",
        "/x",
        code=USAGE,
        files={"f.txt": "x"},
    ),
    case(
        "upload-content-type-crlf",
        "upload",
        TMP + "/f.txt",
        "--to",
        "x",
        "--content-type",
        "a\r\nb",
        code=USAGE,
        files={"f.txt": "x"},
    ),
    case(
        "upload-content-type-nonascii",
        "upload",
        TMP + "/f.txt",
        "--to",
        "x",
        "--content-type",
        "text/plain; charset=\u00e9",
        code=USAGE,
        files={"f.txt": "x"},
    ),
    case("download-no-key", "download", code=USAGE),
    case("download-dotdot", "download", "../x", TMP + "/out", code=USAGE),
    case(
        "download-missing-object",
        "download",
        "no/such/object-" + uuid.uuid4().hex,
        TMP + "/out",
        code=NOT_FOUND,
    ),
    case(
        "download-under-a-file",
        "download",
        OBJECT,
        TMP + "/f.txt/out",
        code=ERROR,
        files={"f.txt": "x"},
    ),
    case("ls-dotdot", "ls", "../", code=USAGE),
    case("ls-absolute", "ls", "/etc/", code=USAGE),
    case("ls-control-char", "ls", "a\x1b[31m/", code=USAGE),
    case("rm-no-key", "rm", code=USAGE),
    case("rm-dotdot", "rm", "..", code=USAGE),
    case("rm-recursive-unconfirmed", "rm", "-r", "some/folder/", code=USAGE),
    case("credentials-format", "credentials", "--format", "xml", code=USAGE),
    case("credentials-port-huge", "credentials", "--serve", "--port", "99999", code=USAGE),
    case("credentials-port-negative", "credentials", "--serve", "--port", "-1", code=USAGE),
    case("credentials-port-word", "credentials", "--serve", "--port", "abc", code=USAGE),
    case("credentials-command-without-serve", "credentials", "--", "true", code=USAGE),
    case(
        "credentials-serve-missing-command",
        "credentials",
        "--serve",
        "--",
        "/no/such/command-" + uuid.uuid4().hex,
        code=USAGE,
    ),
    case("credentials-unknown-workspace", "credentials", "no-such-workspace", code=NOT_FOUND),
    case("workspace-unknown", "workspace", "no-such-workspace", code=NOT_FOUND),
    case("ls-unknown-workspace", "ls", "-w", "no-such-workspace", code=NOT_FOUND),
    case("login-unknown-flow", "login", "--flow", "telepathy", code=USAGE),
    case("sync-no-args", "sync", code=USAGE),
    case("sync-two-local", "sync", TMP, TMP + "/other", code=USAGE),
    case("sync-two-remote", "sync", "workspace://a/x/", "workspace://b/y/", code=USAGE),
    case(
        "sync-dotdot",
        "sync",
        TMP,
        "workspace://gep-processing-results-a2s-service-workspace/../x/",
        code=USAGE,
    ),
    case("sync-unknown-workspace", "sync", TMP, "workspace://no-such-workspace/x/", code=NOT_FOUND),
    case(
        "sync-missing-local",
        "sync",
        TMP + "/missing",
        "workspace://gep-processing-results-a2s-service-workspace/x/",
        code=ERROR,
    ),
    case(
        "sync-log-interval-word",
        "sync",
        TMP,
        "workspace://w/x/",
        "--log-interval",
        "often",
        code=USAGE,
    ),
    case("profile-without-file", "--profile", "nope", "workspaces", code=CONFIG, needle="profile"),
    # issue 20: inputs that used to get the wrong answer
    case("download-empty-dest", "download", OBJECT, "", code=USAGE, needle="empty destination"),
    case(
        "sync-log-interval-nan",
        "sync",
        TMP,
        "workspace://gep-processing-results-a2s-service-workspace/x/",
        "--log-interval",
        "nan",
        code=USAGE,
        needle="--log-interval",
    ),
    case(
        "upload-content-type-20k",
        "upload",
        TMP + "/f.txt",
        "--to",
        "x",
        "--content-type",
        "a" * 20_000,
        code=USAGE,
        files={"f.txt": "x"},
        needle="content type",
    ),
    case(
        "sync-exclude-unclosed-bracket",
        "sync",
        TMP,
        "workspace://gep-processing-results-a2s-service-workspace/prot/",
        "--delete",
        "-y",
        "--exclude",
        "data[1-3",
        code=USAGE,
    ),
    case(
        "sync-include-bracket",
        "sync",
        TMP,
        "workspace://gep-processing-results-a2s-service-workspace/prot/",
        "--include",
        "[",
        code=USAGE,
    ),
    case(
        "sync-include-open-range",
        "sync",
        TMP,
        "workspace://gep-processing-results-a2s-service-workspace/prot/",
        "--include",
        "[a-",
        code=USAGE,
    ),
    case(
        "sync-missing-source-prefix",
        "sync",
        "workspace://gep-processing-results-a2s-service-workspace/typo-does-not-exist/",
        TMP,
        "--delete",
        "-y",
        code=NOT_FOUND,
        needle="no object under",
    ),
    case(
        "upload-two-sources-one-key",
        "upload",
        TMP + "/f.txt",
        TMP + "/clash",
        "--to",
        "clash2/",
        code=USAGE,
        files={"f.txt": "first", "clash/f.txt": "second"},
        needle="clash2/f.txt",
    ),
    case(
        "upload-named-file-filtered-out",
        "upload",
        TMP + "/f.txt",
        "--include",
        "*.tif",
        code=USAGE,
        files={"f.txt": "x"},
        needle="nothing to upload",
    ),
]

# -------------------------------------------------------- environment variables
ENV_CASES = [
    case("url-unset", "workspaces", code=CONFIG, env={"TERRAPI_URL": None}, needle="TERRAPI_URL"),
    case(
        "url-ftp",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_URL": "ftp://example.org/core"},
        needle="TERRAPI_URL",
    ),
    case(
        "url-no-scheme",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_URL": "127.0.0.1:9/core"},
        needle="TERRAPI_URL",
    ),
    case(
        "url-scheme-only",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_URL": "http://"},
        needle="TERRAPI_URL",
    ),
    case(
        "url-bad-ipv6",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_URL": "http://[::1/core"},
        needle="TERRAPI_URL",
    ),
    case(
        "url-bad-port",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_URL": "http://127.0.0.1:99999/core"},
        needle="TERRAPI_URL",
    ),
    case(
        "url-spaces",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_URL": "http://exa mple.org/core"},
        needle="TERRAPI_URL",
    ),
    case("url-closed-port", "workspaces", code=API, env={"TERRAPI_URL": "http://" + CLOSED}),
    case(
        "url-https-on-plain-port",
        "workspaces",
        code=API,
        env={"TERRAPI_URL": "https://" + PLAIN + "/core"},
        needle="TLS handshake",
    ),
    case("url-not-terrapi", "workspaces", code=API, env={"TERRAPI_URL": ISSUER}),
    case(
        "url-query",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_URL": API_URL + "?x=1"},
        needle="TERRAPI_URL",
    ),
    case(
        "url-password",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_URL": "http://user:PASSWORD@" + PLAIN + "/core"},
        needle="TERRAPI_URL",
        secret="PASSWORD",
    ),
    case(
        "issuer-password",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_ISSUER": "http://user:PASSWORD@" + CLOSED},
        needle="TERRAPI_ISSUER",
        secret="PASSWORD",
    ),
    case(
        "issuer-unset",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_ISSUER": None},
        needle="TERRAPI_ISSUER",
    ),
    case(
        "issuer-ftp",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_ISSUER": "ftp://example.org"},
        needle="TERRAPI_ISSUER",
    ),
    case(
        "issuer-no-scheme",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_ISSUER": "login.example.org"},
        needle="TERRAPI_ISSUER",
    ),
    case("issuer-closed-port", "workspaces", code=AUTH, env={"TERRAPI_ISSUER": "http://" + CLOSED}),
    case(
        "issuer-not-oidc",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_ISSUER": API_URL},
        needle="discovery",
    ),
    case(
        "client-secret-wrong",
        "workspaces",
        code=AUTH,
        env={"TERRAPI_CLIENT_SECRET": "not-the-secret", "STS_BRIDGE_CACHE_DIR": TMP + "/c"},
    ),
    case("client-id-wrong", "workspaces", code=AUTH, env={"TERRAPI_CLIENT_ID": "no-such-client"}),
    case(
        "client-secret-without-id",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_CLIENT_ID": None},
        needle="client id",
    ),
    case("flow-unknown", "workspaces", code=CONFIG, env={"TERRAPI_FLOW": "telepathy"}),
    case(
        "flow-missing-module",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_FLOW": "no_such_module_x:auth"},
    ),
    case("flow-not-authenticator", "workspaces", code=CONFIG, env={"TERRAPI_FLOW": "os:sep"}),
    case(
        "insecure-maybe",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_INSECURE": "maybe"},
        needle="TERRAPI_INSECURE",
    ),
    case(
        "ca-bundle-missing",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_CA_BUNDLE": TMP + "/no-such-ca.pem"},
        needle="TERRAPI_CA_BUNDLE",
    ),
    case(
        "ca-bundle-directory",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_CA_BUNDLE": TMP},
        needle="TERRAPI_CA_BUNDLE",
    ),
    case(
        "ca-bundle-not-pem",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_CA_BUNDLE": TMP + "/ca.pem"},
        files={"ca.pem": "hello\n"},
        needle="TERRAPI_CA_BUNDLE",
    ),
    case(
        "ca-bundle-bad-pem",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_CA_BUNDLE": TMP + "/ca.pem"},
        files={"ca.pem": PEM_GARBAGE},
        needle="TERRAPI_CA_BUNDLE",
    ),
    case(
        "ca-bundle-binary",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_CA_BUNDLE": TMP + "/ca.pem"},
        files={"ca.pem": b"\x00\xff\xfe" * 10},
        needle="TERRAPI_CA_BUNDLE",
    ),
    case(
        "token-garbage", "workspaces", code=AUTH, env={"TERRAPI_TOKEN": "garbage"}, needle="refused"
    ),
    case("token-expired", "workspaces", code=AUTH, env={"TERRAPI_TOKEN": EXPIRED_JWT}),
    case(
        "token-unsigned",
        "workspaces",
        code=AUTH,
        env={"TERRAPI_TOKEN": FUTURE_JWT},
        needle="refused",
    ),
    case(
        "token-without-exp",
        "workspaces",
        code=AUTH,
        env={"TERRAPI_TOKEN": NO_EXP_JWT},
        needle="refused",
    ),
    case(
        "token-command-fails",
        "workspaces",
        code=AUTH,
        env={"TERRAPI_TOKEN_COMMAND": "false", "TERRAPI_CLIENT_SECRET": None},
    ),
    case(
        "token-command-missing",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_TOKEN_COMMAND": "/no/such/token-command", "TERRAPI_CLIENT_SECRET": None},
    ),
    case(
        "token-command-empty-output",
        "workspaces",
        code=AUTH,
        env={"TERRAPI_TOKEN_COMMAND": "true", "TERRAPI_CLIENT_SECRET": None},
    ),
    case(
        "token-command-garbage",
        "workspaces",
        code=AUTH,
        env={"TERRAPI_TOKEN_COMMAND": "echo garbage", "TERRAPI_CLIENT_SECRET": None},
    ),
    case(
        "token-command-unclosed-quote",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_TOKEN_COMMAND": "echo 'abc", "TERRAPI_CLIENT_SECRET": None},
        needle="TERRAPI_TOKEN_COMMAND",
    ),
    case(
        "token-command-binary",
        "workspaces",
        code=AUTH,
        env={"TERRAPI_TOKEN_COMMAND": "printf '\\377\\376\\000x'", "TERRAPI_CLIENT_SECRET": None},
        needle="not UTF-8",
    ),
    case(
        "token-command-control-characters",
        "workspaces",
        code=AUTH,
        env={"TERRAPI_TOKEN_COMMAND": "printf 'ab\\033[31mc'", "TERRAPI_CLIENT_SECRET": None},
        needle="not an access token",
    ),
    case(
        "flow-json-loads",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_FLOW": "json:loads"},
        needle="without arguments",
    ),
    case(
        "no-credentials-at-all",
        "workspaces",
        code=AUTH,
        env={"TERRAPI_CLIENT_SECRET": None, "TERRAPI_CLIENT_ID": None},
    ),
    case(
        "workspace-env-unknown",
        "workspace",
        code=NOT_FOUND,
        env={"TERRAPI_WORKSPACE": "no-such-workspace"},
    ),
    case(
        "profile-env-unknown",
        "workspaces",
        code=CONFIG,
        env={"TERRAPI_PROFILE": "nope", "STS_BRIDGE_CONFIG_FILE": TMP + "/config"},
        files={"config": "[default]\n"},
        needle="nope",
    ),
    case(
        "leeway-nan",
        "workspaces",
        code=CONFIG,
        env={"STS_BRIDGE_LEEWAY": "nan"},
        needle="STS_BRIDGE_LEEWAY",
    ),
    case(
        "leeway-inf",
        "workspaces",
        code=CONFIG,
        env={"STS_BRIDGE_LEEWAY": "inf"},
        needle="STS_BRIDGE_LEEWAY",
    ),
    case(
        "leeway-negative",
        "workspaces",
        code=CONFIG,
        env={"STS_BRIDGE_LEEWAY": "-1"},
        needle="STS_BRIDGE_LEEWAY",
    ),
    case(
        "leeway-word",
        "workspaces",
        code=CONFIG,
        env={"STS_BRIDGE_LEEWAY": "soon"},
        needle="STS_BRIDGE_LEEWAY",
    ),
    case(
        "leeway-huge",
        "workspaces",
        code=CONFIG,
        env={"STS_BRIDGE_LEEWAY": "1e300"},
        needle="STS_BRIDGE_LEEWAY",
    ),
    case(
        "token-cache-maybe",
        "workspaces",
        code=CONFIG,
        env={"STS_BRIDGE_TOKEN_CACHE": "maybe"},
        needle="STS_BRIDGE_TOKEN_CACHE",
    ),
    case(
        "cache-dir-is-file",
        "workspaces",
        code=CONFIG,
        env={"STS_BRIDGE_CACHE_DIR": TMP + "/cache-file"},
        files={"cache-file": "x"},
        needle="STS_BRIDGE_CACHE_DIR",
    ),
    case(
        "cache-dir-under-file",
        "workspaces",
        code=CONFIG,
        env={"STS_BRIDGE_CACHE_DIR": TMP + "/cache-file/sub"},
        files={"cache-file": "x"},
        needle="STS_BRIDGE_CACHE_DIR",
    ),
    case(
        "config-file-is-directory",
        "workspaces",
        code=CONFIG,
        env={"STS_BRIDGE_CONFIG_FILE": TMP},
        needle="STS_BRIDGE_CONFIG_FILE",
    ),
    case(
        "config-file-under-file",
        "workspaces",
        code=CONFIG,
        env={"STS_BRIDGE_CONFIG_FILE": TMP + "/f.txt/config"},
        files={"f.txt": "x"},
        needle="STS_BRIDGE_CONFIG_FILE",
    ),
]


# ---------------------------------------------------------------- profile files
def _profile(text: str | bytes, **env: str | None) -> dict[str, Any]:
    return {
        "env": {"STS_BRIDGE_CONFIG_FILE": TMP + "/config", **env},
        "files": {"config": text},
    }


PROFILE_CASES = [
    case(
        "profile-url-ftp",
        "workspaces",
        code=CONFIG,
        needle="url",
        **_profile("[default]\nurl = ftp://example.org/core\n", TERRAPI_URL=None),
    ),
    case(
        "profile-url-no-scheme",
        "workspaces",
        code=CONFIG,
        needle="url",
        **_profile("[default]\nurl = example.org/core\n", TERRAPI_URL=None),
    ),
    case(
        "profile-issuer-ftp",
        "workspaces",
        code=CONFIG,
        needle="issuer",
        **_profile("[default]\nissuer = ftp://example.org\n", TERRAPI_ISSUER=None),
    ),
    case(
        "profile-leeway-nan",
        "workspaces",
        code=CONFIG,
        needle="leeway",
        **_profile("[default]\nleeway = nan\n"),
    ),
    case(
        "profile-leeway-negative",
        "workspaces",
        code=CONFIG,
        needle="leeway",
        **_profile("[default]\nleeway = -3\n"),
    ),
    case(
        "profile-insecure-maybe",
        "workspaces",
        code=CONFIG,
        needle="insecure",
        **_profile("[default]\ninsecure = maybe\n"),
    ),
    case(
        "profile-token-cache-maybe",
        "workspaces",
        code=CONFIG,
        needle="token_cache",
        **_profile("[default]\ntoken_cache = perhaps\n"),
    ),
    case(
        "profile-ca-bundle-missing",
        "workspaces",
        code=CONFIG,
        needle="ca_bundle",
        **_profile("[default]\nca_bundle = /no/such/ca.pem\n"),
    ),
    case(
        "profile-flow-unknown",
        "workspaces",
        code=CONFIG,
        needle="flow",
        **_profile("[default]\nflow = telepathy\n"),
    ),
    case(
        "profile-cache-dir-is-file",
        "workspaces",
        code=CONFIG,
        needle="cache",
        **_profile(f"[default]\ncache_dir = {TMP}/config\n", STS_BRIDGE_CACHE_DIR=None),
    ),
    case(
        "profile-no-section-header",
        "workspaces",
        code=CONFIG,
        **_profile("url = http://example.org\n"),
    ),
    case(
        "profile-duplicate-section",
        "workspaces",
        code=CONFIG,
        **_profile("[default]\nurl = a\n[default]\nurl = b\n"),
    ),
    case(
        "profile-duplicate-key",
        "workspaces",
        code=CONFIG,
        **_profile("[default]\nleeway = 1\nleeway = 2\n"),
    ),
    case("profile-not-utf8", "workspaces", code=CONFIG, **_profile(b"[default]\nurl = \xff\xfe\n")),
    case("profile-binary", "workspaces", code=CONFIG, **_profile(b"\x00\x01\x02\x7f" * 50)),
    case(
        "profile-named-missing",
        "--profile",
        "other",
        "workspaces",
        code=CONFIG,
        needle="other",
        **_profile("[default]\n[profile team]\n"),
    ),
    case(
        "profile-secret-without-id",
        "workspaces",
        code=CONFIG,
        needle="client id",
        **_profile(
            "[default]\nclient_secret = s3cr3t\n",
            TERRAPI_CLIENT_ID=None,
            TERRAPI_CLIENT_SECRET=None,
        ),
    ),
    case(
        "profile-workspace-unknown",
        "workspace",
        code=NOT_FOUND,
        **_profile("[default]\nworkspace = no-such-workspace\n"),
    ),
]

CLI_CASES = ARGUMENT_CASES + ENV_CASES + PROFILE_CASES


# ------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def logged_in(
    local_platform: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The platform's environment, a warm cache, and one object in the workspace."""
    cache = tmp_path_factory.mktemp("bad-input-cache")
    env = dict(local_platform.env())
    env["STS_BRIDGE_CACHE_DIR"] = str(cache)
    env["STS_BRIDGE_CONFIG_FILE"] = str(cache / "no-config")
    with patched_environ(env):
        from sts_bridge import Client

        ws = Client.from_env().workspace()
        key = f"bad-input/{uuid.uuid4().hex}.txt"
        ws.upload(b"hello", key)
    with closed_port() as port:
        api = local_platform.api_url
        yield {
            "env": env,
            "values": {
                "api": api,
                "issuer": local_platform.issuer,
                "closed": f"127.0.0.1:{port}",
                "plain": api.split("://", 1)[1].split("/", 1)[0],
                "object": key,
            },
        }


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextlib.contextmanager
def patched_environ(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` = the test's own TERRAPI_* / STS_BRIDGE_* / AWS_* block, restored after."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("TERRAPI_", "STS_BRIDGE_", "AWS_")):
            del os.environ[name]
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def prepare(bad: Case, logged_in: dict[str, Any], tmp: Path) -> tuple[list[str], dict[str, str]]:
    values = {**logged_in["values"], "tmp": str(tmp)}
    for name, content in bad.files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(_fill(content, values))
    env = dict(logged_in["env"])
    for name, value in bad.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = _fill(value, values)
    return [_fill(arg, values) for arg in bad.argv], env


def assert_one_error(bad: Case, code: int, stdout: str, stderr: str) -> None:
    assert code == bad.code, (code, stderr)
    assert "Traceback" not in stderr, stderr
    assert "unexpected" not in stderr.lower(), stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("sts-bridge: error: ")]
    hints = [line for line in lines if line.startswith("sts-bridge: hint: ")]
    assert len(errors) == 1 and len(hints) == 1, stderr
    assert lines == [errors[0], hints[0]], stderr  # nothing else: no usage block, no warnings
    assert bad.needle.lower() in errors[0].lower(), stderr
    assert stdout == "", stdout
    assert not bad.secret or bad.secret not in stderr, stderr


@pytest.mark.parametrize("bad", CLI_CASES)
def test_cli_bad_input(
    bad: Case,
    logged_in: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv, env = prepare(bad, logged_in, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # not a terminal: no prompts
    with patched_environ(env):
        try:
            code = int(main(argv))
        except SystemExit as exc:  # argparse exits; the console script passes the code on
            code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert_one_error(bad, code, out, err)


SUBPROCESS_IDS = (
    "unknown-command",
    "presign-expires-zero",
    "upload-content-type-crlf",
    "url-ftp",
    "url-no-scheme",
    "leeway-nan",
    "token-garbage",
    "profile-not-utf8",
    "credentials-command-without-serve",
)


@pytest.mark.parametrize("bad", [p for p in CLI_CASES if p.values[0].id in SUBPROCESS_IDS])
def test_cli_bad_input_as_a_real_process(
    bad: Case, logged_in: dict[str, Any], tmp_path: Path
) -> None:
    argv, env = prepare(bad, logged_in, tmp_path)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TERRAPI_", "STS_BRIDGE_"))}
    full.update(env)
    result = subprocess.run(
        [sys.executable, "-m", "sts_bridge", *argv],
        env=full,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_error(bad, result.returncode, result.stdout, result.stderr)


# ------------------------------------------------------------------ Python API
@dataclass(frozen=True)
class ApiCase:
    id: str
    call: Callable[[Any, Path], Any]
    raises: str  # name of the exception class in sts_bridge (or a builtin)


def _ws(client: Any) -> Any:
    return client.workspace()


API_CASES = [
    ApiCase("workspace-unknown", lambda c, t: c.workspace("no-such-ws"), "WorkspaceNotFoundError"),
    ApiCase("upload-dotdot", lambda c, t: _ws(c).upload(b"x", "../x"), "InvalidKeyError"),
    ApiCase("upload-absolute", lambda c, t: _ws(c).upload(b"x", "/x"), "InvalidKeyError"),
    ApiCase("upload-empty-segment", lambda c, t: _ws(c).upload(b"x", "a//b"), "InvalidKeyError"),
    ApiCase("upload-stream-no-key", lambda c, t: _ws(c).upload(b"x"), "InvalidKeyError"),
    ApiCase(
        "upload-missing-file",
        lambda c, t: _ws(c).upload(t / "missing", "x"),
        "TransferError",
    ),
    ApiCase(
        "upload-bad-metadata",
        lambda c, t: _ws(c).upload(b"x", "k", metadata={"bad name": "v"}),
        "InvalidArgumentError",
    ),
    ApiCase(
        "upload-content-type-crlf",
        lambda c, t: _ws(c).upload(b"x", "k", content_type="a\r\nb"),
        "InvalidArgumentError",
    ),
    ApiCase("download-dotdot", lambda c, t: _ws(c).download("../x", t / "o"), "InvalidKeyError"),
    ApiCase(
        "download-missing",
        lambda c, t: _ws(c).download("no/such/" + uuid.uuid4().hex, t / "o"),
        "ObjectNotFoundError",
    ),
    ApiCase("list-dotdot", lambda c, t: list(_ws(c).list("../")), "InvalidKeyError"),
    ApiCase("delete-dotdot", lambda c, t: _ws(c).delete("../x"), "InvalidKeyError"),
    ApiCase(
        "delete-dotdot-recursive",
        lambda c, t: _ws(c).delete("a/../", recursive=True),
        "InvalidKeyError",
    ),
    ApiCase("presign-dotdot", lambda c, t: _ws(c).presign("../x"), "InvalidKeyError"),
    ApiCase("presign-method", lambda c, t: _ws(c).presign("k", method="POST"), "ValueError"),
    ApiCase("presign-zero", lambda c, t: _ws(c).presign("k", expires_in=0), "ValueError"),
    ApiCase("presign-8-days", lambda c, t: _ws(c).presign("k", expires_in=8 * 86400), "ValueError"),
    ApiCase(
        "presign-many-bad-key", lambda c, t: _ws(c).presign_many(["ok", "../x"]), "InvalidKeyError"
    ),
    # issue 20: the wrong type is a clear ValueError-type SDK error, at once
    ApiCase("upload-key-int", lambda c, t: _ws(c).upload("f", 123), "InvalidKeyError"),
    ApiCase(
        "from-env-issuer-int",
        lambda c, t: type(c).from_env(issuer=123),
        "InvalidArgumentError",
    ),
    ApiCase(
        "with-transfer-config-dict",
        lambda c, t: _ws(c).with_transfer_config({"part_size": 8 << 20}),
        "InvalidArgumentError",
    ),
    ApiCase("workspace-int", lambda c, t: c.workspace(123), "InvalidArgumentError"),
    ApiCase("presign-many-str", lambda c, t: _ws(c).presign_many("k"), "InvalidArgumentError"),
    ApiCase(
        "presign-expires-bool",
        lambda c, t: _ws(c).presign("k", expires_in=True),
        "InvalidArgumentError",
    ),
    ApiCase("download-empty-dest", lambda c, t: _ws(c).download("k", ""), "InvalidArgumentError"),
    ApiCase(
        "upload-directory-fifo",
        lambda c, t: (os.mkfifo(t / "fifo"), _ws(c).upload_directory(t, "d/"))[1],
        "TransferError",
    ),
]


@pytest.fixture(scope="module")
def api_client(logged_in: dict[str, Any]) -> Iterator[Any]:
    with patched_environ(logged_in["env"]):
        from sts_bridge import Client

        client = Client.from_env()
        client.workspace()  # warm
        yield client


def _exception_class(name: str) -> type[BaseException]:
    import builtins

    import sts_bridge

    found = getattr(sts_bridge, name, None) or getattr(builtins, name)
    assert isinstance(found, type) and issubclass(found, BaseException)
    return found


@pytest.mark.parametrize("bad", API_CASES, ids=[c.id for c in API_CASES])
def test_python_api_bad_input(bad: ApiCase, api_client: Any, tmp_path: Path) -> None:
    with pytest.raises(_exception_class(bad.raises)) as caught:
        bad.call(api_client, tmp_path)
    text = str(caught.value)
    assert text and "unexpected" not in text.lower()


SETTINGS_CASES: list[tuple[str, dict[str, str]]] = [
    ("url-ftp", {"TERRAPI_URL": "ftp://example.org"}),
    ("url-no-scheme", {"TERRAPI_URL": "example.org/core"}),
    ("leeway-nan", {"STS_BRIDGE_LEEWAY": "nan"}),
    ("insecure-maybe", {"TERRAPI_INSECURE": "maybe"}),
    ("flow-unknown", {"TERRAPI_FLOW": "telepathy"}),
    ("ca-bundle-missing", {"TERRAPI_CA_BUNDLE": "/no/such/ca.pem"}),
]


@pytest.mark.parametrize("name,env", SETTINGS_CASES, ids=[c[0] for c in SETTINGS_CASES])
def test_python_api_bad_settings(name: str, env: dict[str, str], logged_in: dict[str, Any]) -> None:
    import sts_bridge

    with (
        patched_environ({**logged_in["env"], **env}),
        pytest.raises(sts_bridge.ConfigurationError) as caught,
    ):
        sts_bridge.Client.from_env().workspace()
    assert caught.value.hint


# ------------------------------------------------------- issue 20: beyond the table
@pytest.mark.parametrize(
    "argv,env,code",
    [
        (["workspace", "no-such-workspace"], {}, NOT_FOUND),
        (["workspaces"], {"TERRAPI_URL": "http://" + CLOSED}, API),
        (["workspaces"], {"TERRAPI_TOKEN": "garbage"}, AUTH),
    ],
    ids=["not-found", "api", "auth"],
)
def test_debug_keeps_the_exit_code(
    argv: list[str],
    env: dict[str, str],
    code: int,
    logged_in: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--debug`` adds a traceback; the error line, the hint and the exit code stay."""
    filled = {k: _fill(v, logged_in["values"]) for k, v in env.items()}
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    with patched_environ({**logged_in["env"], **filled}):
        got = int(main(["--debug", *argv]))
    _, err = capsys.readouterr()
    assert got == code, err
    assert "Traceback" in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-2].startswith("sts-bridge: error: ") and lines[-1].startswith(
        "sts-bridge: hint: "
    )


@pytest.mark.parametrize(
    "shell_line,needle",
    [
        ("upload - --to k <&-", "standard input is closed"),
        ("download {object} - >&-", "standard output is closed"),
    ],
    ids=["closed-stdin", "closed-stdout"],
)
def test_closed_stdin_or_stdout_is_one_error(
    shell_line: str, needle: str, logged_in: dict[str, Any], tmp_path: Path
) -> None:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TERRAPI_", "STS_BRIDGE_"))}
    full.update(logged_in["env"])
    line = f"exec {sys.executable} -m sts_bridge " + _fill(shell_line, logged_in["values"])
    result = subprocess.run(
        ["sh", "-c", line], env=full, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    bad = Case(shell_line, (), USAGE, needle=needle)
    assert_one_error(bad, result.returncode, result.stdout, result.stderr)


def test_a_relative_cache_dir_in_the_profile_is_relative_to_the_file(
    logged_in: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    (config_dir / "config").write_text("[default]\ncache_dir = rel-cache\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    env = dict(logged_in["env"])
    env.pop("STS_BRIDGE_CACHE_DIR")
    env["STS_BRIDGE_CONFIG_FILE"] = str(config_dir / "config")
    with patched_environ(env):
        assert int(main(["workspaces"])) == 0, capsys.readouterr().err
        from sts_bridge.config import load_settings

        assert load_settings().cache_dir == config_dir.resolve() / "rel-cache"
    assert (config_dir / "rel-cache").is_dir()
    assert list(elsewhere.iterdir()) == []


def test_a_key_with_escapes_from_the_store_is_printed_escaped(
    api_client: Any,
    logged_in: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keys written by other tools reach the terminal escaped, whatever the command."""
    ws = _ws(api_client)
    folder = f"evil-{uuid.uuid4().hex[:8]}/"
    key = folder + "abs/\x1b[31mred.txt"
    ws.s3_client().put_object(Bucket=ws.bucket, Key=ws.prefix + key, Body=b"red")
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    outputs = []
    with patched_environ(logged_in["env"]):
        for argv in (
            ["ls", "-r", folder],
            ["sync", f"workspace://{ws.name}/{folder}", str(tmp_path / "copy"), "--dry-run"],
            ["sync", f"workspace://{ws.name}/{folder}", str(tmp_path / "copy")],
            ["download", key, str(tmp_path / "one")],
            ["rm", "-r", "-y", folder],
        ):
            code = int(main(argv))
            out, err = capsys.readouterr()
            outputs.append((argv[0], code, out, err))
    for name, code, out, err in outputs:
        assert "\x1b" not in out + err, (name, code, out, err)
        assert "Traceback" not in err and "unexpected" not in err.lower(), err
    assert outputs[0][1] == 0 and "\\x1b[31mred.txt" in outputs[0][2]
    assert outputs[-1][1] == 0, outputs[-1]
    assert list(ws.list(folder, recursive=True)) == []


def test_the_readme_counts_what_the_table_holds() -> None:
    """The README's failure section says how many bad inputs this file checks;
    the count must be exact, and every case must have a name of its own."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    claim = re.search(r"test_bad_input\.py`\s*\([^)]*?a table of (\d+)", readme)
    assert claim, "README.md must say how many inputs test_bad_input.py's table holds"
    tables = {
        "CLI": [c.values[0].id for c in CLI_CASES],
        "API": [c.id for c in API_CASES],
        "settings": [c[0] for c in SETTINGS_CASES],
    }
    total = sum(len(names) for names in tables.values())
    assert total == int(claim.group(1)), (total, claim.group(0))
    for table, names in tables.items():
        assert len(set(names)) == len(names), f"{table} cases share a name"
