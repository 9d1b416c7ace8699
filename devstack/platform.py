"""The whole local platform: identity provider + radosgw (S3 + STS) + the
reference TerrAPI server, on free loopback ports.

Usage::

    with LocalPlatform(token_ttl=5, sts_duration=5) as platform:
        os.environ.update(platform.env())
        ...

``start()`` starts the IdP and radosgw (in parallel), creates the buckets of
the workspace policy (``devstack/platform.yaml``), registers the IdP as an
OpenID Connect provider in radosgw, creates the platform role, then starts the
API server (``python -m sts_bridge_devstack.api``) in its own process.
``stop()`` stops all three (SIGTERM, then SIGKILL) and removes every temp folder.

S3 backend (``s3_backend=``, default from ``STS_BRIDGE_DEVSTACK_S3``, else
``"auto"``): ``"radosgw"`` (the real one, :class:`RadosGateway`), ``"moto"``
(the fallback, :class:`~sts_bridge_devstack.s3_moto.MotoGateway`: IAM
enforcement on, but see :data:`~sts_bridge_devstack.s3_moto.LOST_GUARANTEES`),
``"auto"``: radosgw when the Ceph binaries are on PATH, else moto with a
warning on stderr listing what the fallback loses. ``platform.s3_backend``
says which one runs.

``users=`` replaces the IdP's users (default alice, bob and carol, a member
of ``curators``; every user gets a private workspace); ``exchange_token_ttl=``
gives tokens issued by token exchange their own lifetime (re-exchange tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import requests

from . import lifeline
from .api.policy import load_policy
from .idp import IdentityProvider, IdpConfig, User
from .ports import free_port, wait_until_ready
from .s3 import (
    LIFECYCLE,
    PUBLIC_ACCESS_BLOCK,
    RadosGateway,
    missing_binaries,
    role_policy,
    trust_policy,
)
from .s3_moto import LOST_GUARANTEES, MotoGateway, moto_available

API_PATH = "/core"
#: environment variable choosing the S3 backend (``auto``, ``radosgw``, ``moto``)
S3_BACKEND_ENV = "STS_BRIDGE_DEVSTACK_S3"
S3_BACKENDS = ("auto", "radosgw", "moto")


class PlatformError(RuntimeError):
    """The local platform could not start."""


def fallback_warning() -> str:
    """The text printed on stderr when the platform runs on the moto fallback."""
    lines = [
        "WARNING: the local platform runs on the moto S3 FALLBACK, not radosgw "
        f"(Ceph binaries missing: {', '.join(missing_binaries()) or 'none'}; or "
        f"{S3_BACKEND_ENV}=moto). Run `make setup` as root on Debian for the real "
        "backend. IAM enforcement is on (wrong secrets, missing session tokens and "
        "keys outside the workspace prefix are refused), but the fallback LOSES:",
    ]
    lines += [f"  - {g}" for g in LOST_GUARANTEES]
    return "\n".join(lines)


def resolve_s3_backend(requested: str | None = None) -> str:
    """``radosgw`` or ``moto`` for ``requested`` (``None``: the environment
    variable, else ``auto``). Raises :class:`PlatformError` when the requested
    backend cannot run here."""
    choice = (requested or os.environ.get(S3_BACKEND_ENV) or "auto").strip().lower()
    if choice not in S3_BACKENDS:
        raise PlatformError(
            f"unknown S3 backend {choice!r} (s3_backend / {S3_BACKEND_ENV}): "
            f"use one of {', '.join(S3_BACKENDS)}"
        )
    if choice == "auto":
        if not missing_binaries():
            return "radosgw"
        if moto_available():
            return "moto"
        raise PlatformError(
            f"no S3 backend: Ceph binaries missing ({', '.join(missing_binaries())}; run "
            "`make setup`) and moto is not installed (pip install 'moto[server]')"
        )
    return choice


class LocalPlatform:
    """A running local platform (see the module docstring).

    Attributes after :meth:`start`: ``issuer``, ``api_url`` (``http://127.0.0.1:PORT/core``),
    ``s3_endpoint``, ``s3_backend`` (``radosgw`` or ``moto``, known at
    construction), ``fallback_warning`` (empty on radosgw), ``service_client_id``,
    ``service_client_secret``, ``exchange_client_id`` / ``exchange_client_secret`` /
    ``exchange_audience`` (the service that may exchange users' tokens),
    ``cli_client_id``, ``audience``, ``scopes``, ``users`` (username ->
    password), ``idp`` (:class:`IdentityProvider`), ``s3``
    (:class:`RadosGateway`), ``role_arn``, ``policy`` (the policy mapping),
    ``start_seconds``.
    """

    def __init__(
        self,
        *,
        token_ttl: int = 3600,
        sts_duration: int | None = None,
        auto_approve: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        policy_file: str | os.PathLike[str] | None = None,
        api_log: TextIO | None = None,
        leeway: float = 2.0,
        startup_timeout: float = 30.0,
        s3_backend: str | None = None,
        warn: TextIO | None = None,
        users: list[User] | None = None,
        exchange_token_ttl: int | None = None,
        memstore_bytes: int | None = None,
    ) -> None:
        self.s3_backend = resolve_s3_backend(s3_backend)
        #: where the fallback warning goes (default sys.stderr at start())
        self._warn_stream = warn
        self.fallback_warning = fallback_warning() if self.s3_backend == "moto" else ""
        self.token_ttl = int(token_ttl)
        self.exchange_token_ttl = exchange_token_ttl
        #: radosgw's store size (None: RadosGateway's default); a small one fills fast
        self.memstore_bytes = memstore_bytes
        self._users = users
        self.policy = load_policy(policy_file)
        sts_default = int((self.policy.get("sts") or {}).get("duration_seconds", 900))
        self.sts_duration = int(sts_duration if sts_duration is not None else sts_default)
        self.auto_approve = auto_approve
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self._api_log_stream = api_log
        self.leeway = leeway
        self.startup_timeout = startup_timeout
        self.workdir: Path | None = None
        self.idp: IdentityProvider | None = None
        self.s3: RadosGateway | MotoGateway | None = None
        self._api: subprocess.Popen[bytes] | None = None
        self._api_log_file: Any = None
        self.api_port = 0
        self.api_url = ""
        self.issuer = ""
        self.s3_endpoint = ""
        self.role_arn = ""
        self.start_seconds = 0.0

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._api is not None and self._api.poll() is None

    def __enter__(self) -> LocalPlatform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalPlatform:
        if self.running:
            return self
        started = time.monotonic()
        if self.fallback_warning:
            stream = self._warn_stream if self._warn_stream is not None else sys.stderr
            print(self.fallback_warning, file=stream, flush=True)
        if self._workdir_arg is not None:
            self._workdir_arg.mkdir(parents=True, exist_ok=True)
        self.workdir = lifeline.mkdtemp("sts-bridge-platform-", self._workdir_arg)
        try:
            self._start_backends()
            self._configure_s3()
            self._start_api()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def _start_backends(self) -> None:
        assert self.workdir is not None
        self.idp = IdentityProvider(
            IdpConfig(
                access_token_ttl=self.token_ttl,
                exchange_token_ttl=self.exchange_token_ttl,
                **({"users": list(self._users)} if self._users is not None else {}),
                auto_approve=self.auto_approve,
                platform=str(self.policy.get("platform_id", "gep")),
            ),
            workdir=self.workdir,
        )
        self.s3 = (
            MotoGateway()
            if self.s3_backend == "moto"
            else RadosGateway()
            if self.memstore_bytes is None
            else RadosGateway(memstore_bytes=self.memstore_bytes)
        )
        errors: list[BaseException] = []

        def start_idp() -> None:
            try:
                assert self.idp is not None
                self.idp.start()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=start_idp, name="idp-start", daemon=True)
        thread.start()
        try:
            self.s3.start()
        finally:
            thread.join()
        if errors:
            raise errors[0]
        self.issuer = self.idp.issuer
        self.s3_endpoint = self.s3.endpoint_url

    def _buckets(self) -> list[str]:
        names: list[str] = []
        ws = self.policy.get("workspaces") or {}
        for rule in (ws.get("private"), ws.get("group"), *(ws.get("services") or [])):
            if rule and rule.get("bucket") and rule["bucket"] not in names:
                names.append(str(rule["bucket"]))
        return names

    def _configure_s3(self) -> None:
        assert self.s3 is not None and self.idp is not None
        buckets = self._buckets()
        for bucket in buckets:
            self.s3.create_bucket(bucket)
            self.s3.apply_bucket_rules(bucket, PUBLIC_ACCESS_BLOCK, LIFECYCLE)
        client_ids = [self.idp.audience] + [
            c for c in (self.idp.service_client_id, self.idp.cli_client_id) if c
        ]
        self.s3.register_oidc_provider(self.issuer, client_ids)
        role = str((self.policy.get("sts") or {}).get("role_name", "gep"))
        self.role_arn = self.s3.create_role(
            role, trust_policy(self.issuer, self.idp.audience), role_policy(buckets)
        )

    def _start_api(self) -> None:
        assert self.workdir is not None and self.idp is not None and self.s3 is not None
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}{API_PATH}"
        config = {
            "issuer": self.issuer,
            "audience": self.idp.audience,
            "jwks_uri": self.idp.jwks_uri,
            "leeway": self.leeway,
            "s3_endpoint": self.s3_endpoint,
            "role_arn": self.role_arn,
            "s3_backend": self.s3_backend,
            "sts_duration": self.sts_duration,
            "public_url": self.api_url,
            "users": {name: list(u.groups) for name, u in self.idp.users.items()},
            "policy": self.policy,
        }
        if self.s3_backend == "moto":
            config["s3_admin_access_key"] = self.s3.admin_access_key
            config["s3_admin_secret_key"] = self.s3.admin_secret_key
        config_path = self.workdir / "api-config.json"
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(config, fh)
        if self._api_log_stream is not None:
            stderr: Any = self._api_log_stream
        else:
            self._api_log_file = open(self.workdir / "api.log", "wb")  # noqa: SIM115
            stderr = self._api_log_file
        self._api = lifeline.popen(
            [
                sys.executable,
                "-m",
                "sts_bridge_devstack.api",
                "--config",
                str(config_path),
                "--port",
                str(self.api_port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._api.poll() is not None:
                raise PlatformError(
                    f"the reference API exited with status {self._api.returncode}:\n"
                    f"{self.api_log()[-3000:]}"
                )
            try:
                wait_until_ready(
                    f"http://127.0.0.1:{self.api_port}/__devstack/stats",
                    timeout=0.3,
                    what="reference API",
                )
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise PlatformError(
                        f"the reference API did not answer within {self.startup_timeout} s:\n"
                        f"{self.api_log()[-3000:]}"
                    ) from None

    def api_log(self) -> str:
        """The API server's log (empty when it goes to a caller's stream)."""
        if self.workdir is None:
            return ""
        path = self.workdir / "api.log"
        with contextlib.suppress(OSError):
            return path.read_text("utf-8", errors="replace")
        return ""

    def stop(self) -> None:
        proc, self._api = self._api, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if self._api_log_file is not None:
            self._api_log_file.close()
            self._api_log_file = None
        idp, self.idp = self.idp, None
        s3, self.s3 = self.s3, None
        if idp is not None:
            with contextlib.suppress(Exception):
                idp.stop()
        if s3 is not None:
            with contextlib.suppress(Exception):
                s3.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __del__(self) -> None:  # last resort: never leave the API behind
        with contextlib.suppress(Exception):
            if self._api is not None and self._api.poll() is None:
                os.killpg(self._api.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ facts
    def _need_idp(self) -> IdentityProvider:
        if self.idp is None:
            raise PlatformError("the platform is not running")
        return self.idp

    @property
    def audience(self) -> str:
        return self._need_idp().audience

    @property
    def scopes(self) -> str:
        return self._need_idp().default_scopes()

    @property
    def service_client_id(self) -> str:
        return str(self._need_idp().service_client_id)

    @property
    def service_client_secret(self) -> str:
        return str(self._need_idp().service_client_secret)

    @property
    def cli_client_id(self) -> str:
        return str(self._need_idp().cli_client_id)

    @property
    def exchange_client_id(self) -> str:
        """The service client that may exchange users' tokens (RFC 8693)."""
        return str(self._need_idp().exchange_client_id)

    @property
    def exchange_client_secret(self) -> str:
        return str(self._need_idp().exchange_client_secret)

    @property
    def exchange_audience(self) -> str:
        """The audience of the tokens users send to that service."""
        return self._need_idp().exchange_audience

    @property
    def users(self) -> dict[str, str]:
        return {name: u.password for name, u in self._need_idp().users.items()}

    @property
    def token_endpoint(self) -> str:
        return self._need_idp().token_endpoint

    def env(self, user: str = "alice") -> dict[str, str]:
        """The configuration block a client needs (service client credentials,
        plus the CLI client and a user for the browser / device flows)."""
        return {
            "TERRAPI_URL": self.api_url,
            "TERRAPI_ISSUER": self.issuer,
            "TERRAPI_CLIENT_ID": self.service_client_id,
            "TERRAPI_CLIENT_SECRET": self.service_client_secret,
            "TERRAPI_AUDIENCE": self.audience,
            "TERRAPI_SCOPES": self.scopes,
            "STS_BRIDGE_DEVSTACK_CLI_CLIENT_ID": self.cli_client_id,
            "STS_BRIDGE_DEVSTACK_USER": user,
            "STS_BRIDGE_DEVSTACK_PASSWORD": self.users[user],
        }

    # ------------------------------------------------------------------ helpers
    def service_token(self, scope: str | None = None) -> str:
        """A fresh access token of the service client (client credentials)."""
        resp = requests.post(
            self.token_endpoint,
            data={"grant_type": "client_credentials", "scope": scope or self.scopes},
            auth=(self.service_client_id, self.service_client_secret),
            timeout=10,
        )
        resp.raise_for_status()
        return str(resp.json()["access_token"])

    def user_token(
        self,
        username: str = "alice",
        scope: str | None = None,
        resource: str | None = None,
        client_id: str | None = None,
    ) -> str:
        """A fresh access token of ``username`` for the CLI client (see
        :meth:`IdentityProvider.user_token`); ``scope`` defaults to the platform's.
        ``resource``: the audience to log in for (default the API's; e.g.
        :attr:`exchange_audience` for a token a user sends to the results service);
        ``client_id``: another public client (``OPAQUE_CLI_CLIENT_ID``: an opaque token)."""
        return self._need_idp().user_token(
            username, scope or self.scopes, resource=resource, client_id=client_id
        )

    def api_stats(self) -> dict[str, Any]:
        resp = requests.get(f"http://127.0.0.1:{self.api_port}/__devstack/stats", timeout=5)
        resp.raise_for_status()
        return dict(resp.json())

    def idp_stats(self) -> dict[str, Any]:
        return self._need_idp().stats()

    def reset_stats(self) -> None:
        requests.post(
            f"http://127.0.0.1:{self.api_port}/__devstack/stats/reset", timeout=5
        ).raise_for_status()
        self._need_idp().reset_stats()


__all__ = [
    "API_PATH",
    "S3_BACKENDS",
    "S3_BACKEND_ENV",
    "LocalPlatform",
    "PlatformError",
    "fallback_warning",
    "resolve_s3_backend",
]
