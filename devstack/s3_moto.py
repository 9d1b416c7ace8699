"""The S3 FALLBACK of the local platform: moto's server with IAM enforcement.

Used only where the Ceph packages cannot be installed (not Debian, not
root); CI always runs on radosgw (:mod:`sts_bridge_devstack.s3`).
``MotoGateway`` offers the part of :class:`~sts_bridge_devstack.s3.RadosGateway`
that :class:`~sts_bridge_devstack.platform.LocalPlatform` and the reference
API use: ``start``/``stop``/context manager, ``endpoint_url``, ``region``,
``admin_access_key``/``admin_secret_key``, ``client()``, ``create_user``,
``create_bucket``, ``register_oidc_provider``, ``create_role``, and
:meth:`MotoGateway.assume_role` (same dict shape as
``RadosGateway.assume_role_with_web_identity``).

How it runs
-----------
``python -m moto.server`` in its own process group on a free 127.0.0.1 port.
It starts with authentication off (moto has no root keys: the first user
must be created unauthenticated), creates the admin user ``sts-bridge-admin``
(inline policy ``*`` on ``*``) and its access key, then switches IAM
enforcement on through ``POST /moto-api/reset-auth`` with ``0`` (the same as
``INITIAL_NO_AUTH_ACTION_COUNT=0``: every later request is authenticated and
authorized) and checks that a wrong secret is refused.

How credentials are issued on the fallback
------------------------------------------
moto answers an unsigned AssumeRoleWithWebIdentity with HTTP 500 and never
validates a web identity token, and it ignores session policies. So the
reference API, on this backend, (1) verifies the caller's JWT itself (it does
on every request anyway: signature against the IdP's JWKS, issuer, audience,
expiry), then (2) calls a SIGNED ``AssumeRole`` with the admin keys onto a
role whose INLINE policy is exactly the workspace policy (one role per
distinct policy, created on first use; see
:func:`role_name_for_policy`). moto enforces role inline policies on object
ARNs, so the credentials cannot touch keys outside the workspace prefix.

What the fallback loses (:data:`LOST_GUARANTEES`, printed on stderr by the
platform when it falls back).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import lifeline
from ._gateway import S3Gateway, compact_json, ensure_role
from .ports import free_port, wait_until_ready
from .s3 import REGION, RadosGatewayError, StsError, idp_id

#: moto's default account
ACCOUNT_ID = "123456789012"
ADMIN_USER = "sts-bridge-admin"

#: what tests and users lose on the moto fallback (one line each)
LOST_GUARANTEES: tuple[str, ...] = (
    "STS credential expiry is NOT enforced: expired credentials keep working",
    "session policies and policy conditions are NOT enforced (s3:prefix on "
    "ListBucket is ignored: listing the whole bucket is allowed); only role "
    "inline policies on object/bucket ARNs are",
    "presigned URLs answer HTTP 500 (with enforcement on) instead of 200/403",
    "web identity tokens are NOT validated by S3/STS: the reference API "
    "verifies the JWT and then uses a signed AssumeRole with admin keys",
    "request bodies are buffered in RAM (about 1.2 GB RSS for a 200 MiB upload) "
    "and transfers are slower",
    "S3-compatible quirks of radosgw (compact policy JSON, empty multipart ETag, "
    "STS errors without code, Content-MD5/sha256 checks) are not reproduced",
    "anyone on 127.0.0.1 can switch enforcement off (POST /moto-api/reset-auth)",
)


class MotoGatewayError(RadosGatewayError):
    """The moto server could not be started or driven."""


def moto_available() -> bool:
    """True when ``moto[server]`` (moto + flask + flask_cors) is importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("moto", "flask", "flask_cors"))


def role_name_for_policy(policy: dict[str, Any]) -> str:
    """Deterministic role name for an inline policy (one role per policy)."""
    digest = hashlib.sha256(compact_json(policy).encode()).hexdigest()[:32]
    return f"sts-bridge-{digest}"


#: IAM actions of S3 -> the operation names moto >= 5.2.6 checks instead.
#: AWS authorizes ListObjectsV2 as s3:ListBucket, HeadObject as s3:GetObject,
#: the multipart calls as s3:PutObject; moto now asks for a permission named
#: after the API operation itself, so a policy written for AWS (and radosgw)
#: is refused there unless it also names these.
MOTO_ACTION_NAMES: dict[str, tuple[str, ...]] = {
    "s3:ListBucket": ("s3:ListObjects", "s3:ListObjectsV2"),
    "s3:GetObject": ("s3:HeadObject",),
    "s3:PutObject": (
        "s3:CreateMultipartUpload",
        "s3:UploadPart",
        "s3:CompleteMultipartUpload",
        "s3:CopyObject",
    ),
    "s3:DeleteObject": ("s3:DeleteObjects",),
    "s3:ListMultipartUploadParts": ("s3:ListParts",),
}


def with_moto_action_names(policy: dict[str, Any]) -> dict[str, Any]:
    """``policy`` whose statements also name moto's operation-named actions.

    The same resources and conditions: nothing is granted on AWS terms that
    the policy did not grant already.
    """
    statements = []
    for statement in policy.get("Statement", []):
        actions = statement.get("Action")
        if isinstance(actions, str):
            actions = [actions]
        if not isinstance(actions, list):
            statements.append(statement)
            continue
        expanded = list(actions)
        for action in actions:
            expanded += [a for a in MOTO_ACTION_NAMES.get(action, ()) if a not in expanded]
        statements.append({**statement, "Action": expanded})
    return {**policy, "Statement": statements}


def admin_trust_policy() -> dict[str, Any]:
    """Trust policy of the per-workspace roles: AssumeRole by the admin user."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam::{ACCOUNT_ID}:user/{ADMIN_USER}"]},
                "Action": ["sts:AssumeRole"],
            }
        ],
    }


class MotoGateway(S3Gateway):
    """moto's server (S3 + IAM + STS) with IAM enforcement on, on loopback."""

    region = REGION
    kind = "moto"

    def __init__(self, *, startup_timeout: float = 60.0) -> None:
        self.startup_timeout = startup_timeout
        self.workdir: Path | None = None
        self.endpoint_url = ""
        self.port = 0
        self.admin_access_key = ""
        self.admin_secret_key = ""
        self._proc: subprocess.Popen[bytes] | None = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def _procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """Same shape as ``RadosGateway._procs`` (name -> process)."""
        return {"moto": self._proc} if self._proc is not None else {}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> MotoGateway:
        if self._proc is not None:
            raise MotoGatewayError("MotoGateway already started")
        if not moto_available():
            raise MotoGatewayError(
                "moto is not installed: pip install 'moto[server]' (the S3 fallback "
                "of the local platform)"
            )
        self.workdir = lifeline.mkdtemp("sts-bridge-moto-")
        try:
            self._spawn()
            self._bootstrap()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
            else:
                # the group may still hold children of a dead leader
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __del__(self) -> None:  # last resort
        with contextlib.suppress(Exception):
            if self._proc is not None and self._proc.poll() is None:
                os.killpg(self._proc.pid, signal.SIGKILL)

    def _tail(self) -> str:
        if self.workdir is None:
            return ""
        with contextlib.suppress(OSError):
            return (self.workdir / "moto.log").read_text(errors="replace")[-2000:].strip()
        return ""

    def _spawn(self) -> None:
        assert self.workdir is not None
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        # authentication off for the bootstrap only (see _bootstrap)
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        env.pop("TEST_SERVER_MODE", None)
        env.setdefault("MOTO_ACCOUNT_ID", ACCOUNT_ID)
        log = open(self.workdir / "moto.log", "wb")  # noqa: SIM115
        try:
            self._proc = lifeline.popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise MotoGatewayError(
                    f"moto.server exited with {self._proc.returncode}: {self._tail()}"
                )
            try:
                wait_until_ready(f"{self.endpoint_url}/moto-api/", timeout=0.5, what="moto")
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise MotoGatewayError(
                        f"moto.server did not answer within {self.startup_timeout} s: "
                        f"{self._tail()}"
                    ) from None

    def _bootstrap(self) -> None:
        import requests
        from botocore.exceptions import ClientError

        # auth is still off: any keys are accepted
        iam = self.client("iam", "bootstrap-placeholder", "bootstrap")
        iam.create_user(UserName=ADMIN_USER)
        iam.put_user_policy(
            UserName=ADMIN_USER,
            PolicyName="admin",
            PolicyDocument=compact_json(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
        self.admin_access_key = str(key["AccessKeyId"])
        self.admin_secret_key = str(key["SecretAccessKey"])
        # enforcement on from now on (INITIAL_NO_AUTH_ACTION_COUNT = 0)
        resp = requests.post(f"{self.endpoint_url}/moto-api/reset-auth", data=b"0", timeout=10)
        resp.raise_for_status()
        # prove it: a wrong secret is refused, the admin is accepted
        wrong = self.client("s3", self.admin_access_key, "wrong-secret")
        try:
            wrong.list_buckets()
        except ClientError:
            pass
        else:
            raise MotoGatewayError("moto accepted a wrong secret: IAM enforcement is not on")
        self.client("s3").list_buckets()

    # ------------------------------------------------------------------ clients
    def _need_running(self) -> None:
        if not self.running:
            raise MotoGatewayError("MotoGateway is not running")

    # --------------------------------------------------------------- operations
    def create_user(self, uid: str, *, caps: str | None = None) -> tuple[str, str]:
        """An IAM user with fresh keys: ``(access_key, secret_key)``.

        radosgw users own what they create; moto users may do nothing until
        given a policy: ``caps`` (any value) grants ``*`` on ``*``.
        """
        self._need_running()
        iam = self.client("iam")
        iam.create_user(UserName=uid)
        if caps:
            iam.put_user_policy(
                UserName=uid,
                PolicyName="caps",
                PolicyDocument=compact_json(
                    {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                    }
                ),
            )
        key = iam.create_access_key(UserName=uid)["AccessKey"]
        return str(key["AccessKeyId"]), str(key["SecretAccessKey"])

    def create_bucket(self, name: str) -> None:
        """A bucket owned by the admin user (idempotent)."""
        self._need_running()
        s3 = self.client("s3")
        with contextlib.suppress(
            s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists
        ):
            s3.create_bucket(Bucket=name)

    def register_oidc_provider(self, issuer_url: str, client_ids: list[str]) -> str:
        """CreateOpenIDConnectProvider (bookkeeping only: moto never validates
        tokens against it); returns the provider ARN."""
        from botocore.exceptions import ClientError

        self._need_running()
        arn = f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{idp_id(issuer_url)}"
        try:
            resp = self.client("iam").create_open_id_connect_provider(
                Url=issuer_url, ClientIDList=list(client_ids), ThumbprintList=["0" * 40]
            )
            return str(resp.get("OpenIDConnectProviderArn") or arn)
        except ClientError:
            return arn  # exists, or moto refused the http:// URL: nothing depends on it

    def create_role(
        self,
        name: str,
        trust_policy: dict[str, Any],
        role_policy: dict[str, Any],
        *,
        max_session_duration: int = 3600,
    ) -> str:
        """A role with ``trust_policy`` and an inline ``role_policy``; returns its ARN.

        The inline policy is granted as written and under moto's names for
        the same permissions (:func:`with_moto_action_names`).
        """
        self._need_running()
        return ensure_role(
            self.client("iam", parameter_validation=False),
            name,
            trust_policy,
            with_moto_action_names(role_policy),
            max_session_duration=max_session_duration,
            error=MotoGatewayError,
        )

    def assume_role(
        self,
        role_arn: str,
        session_name: str,
        duration_seconds: int = 900,
        policy: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """SIGNED STS AssumeRole with the admin keys (moto ignores ``policy``).

        Returns ``{"access_key", "secret_key", "session_token", "expiration"}``
        like ``RadosGateway.assume_role_with_web_identity``; raises :class:`StsError`.
        """
        self._need_running()
        return assume_role(
            self.client("sts", parameter_validation=False),
            role_arn,
            session_name,
            duration_seconds,
            policy,
        )

    def assume_role_with_web_identity(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise StsError(
            "moto cannot serve AssumeRoleWithWebIdentity (unsigned: HTTP 500; it never "
            "validates the token): verify the token yourself, then use "
            "MotoGateway.assume_role onto a role limited to the workspace",
            None,
        )


def assume_role(
    sts: Any,
    role_arn: str,
    session_name: str,
    duration_seconds: int = 900,
    policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Signed AssumeRole on ``sts`` (a client with the admin keys)."""
    from botocore.exceptions import BotoCoreError, ClientError

    kwargs: dict[str, Any] = {
        "RoleArn": role_arn,
        "RoleSessionName": session_name,
        "DurationSeconds": int(duration_seconds),
    }
    if policy is not None:
        kwargs["Policy"] = compact_json(policy)
    try:
        resp = sts.assume_role(**kwargs)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        raise StsError(f"AssumeRole {role_arn} refused (HTTP {status}): {exc}", status) from exc
    except BotoCoreError as exc:
        raise StsError(f"AssumeRole failed: {exc}") from exc
    c = resp["Credentials"]
    return {
        "access_key": c["AccessKeyId"],
        "secret_key": c["SecretAccessKey"],
        "session_token": c["SessionToken"],
        "expiration": c["Expiration"],
    }


__all__ = [
    "ACCOUNT_ID",
    "ADMIN_USER",
    "LOST_GUARANTEES",
    "MotoGateway",
    "MotoGatewayError",
    "admin_trust_policy",
    "assume_role",
    "ensure_role",
    "moto_available",
    "role_name_for_policy",
    "with_moto_action_names",
]
