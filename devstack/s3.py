"""S3 with real STS on loopback: a throwaway single-node Ceph radosgw.

``RadosGateway`` starts one monitor, one OSD with the ``memstore`` object
store (objects live in RAM, capped by ``memstore_bytes``) and one radosgw
(beast frontend) on free 127.0.0.1 ports, all in a temporary folder that
``stop()`` removes. ``auth ... required = none`` inside the cluster; S3 itself
is fully authenticated (SigV4, STS session tokens, IAM policies).

Usage::

    with RadosGateway() as rgw:
        rgw.create_bucket("gep-processing-results")
        rgw.register_oidc_provider(issuer, ["sts-bridge"])
        arn = rgw.create_role("gep", trust_policy(issuer, "sts-bridge"),
                              role_policy(["gep-processing-results"]))
        creds = rgw.assume_role_with_web_identity(
            arn, jwt, "alice", 900,
            policy=session_policy("gep-processing-results", "a2s/"))

The role and policy shapes the reference API uses
-------------------------------------------------

One role per platform, trusted by the platform's issuer::

    trust_policy(issuer, audience) ==
    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Allow",
                    "Principal": {"Federated": ["arn:aws:iam:::oidc-provider/<issuer host+path>"]},
                    "Action": ["sts:AssumeRoleWithWebIdentity"],
                    "Condition": {"StringEquals": {"<issuer host+path>:aud": audience}}}]}

The audience condition is NOT optional in practice: radosgw 16.2.15 does not
check the token's ``aud`` against the provider's ClientIDList, so without it a
token of the issuer for any client is accepted. Measured: the trust policy
evaluates ``<idp>:aud`` and ``<idp>:app_id`` (both = the token's ``aud``; a
list ``aud`` matches when any element matches) and ``<idp>:sub``.

The role (inline) policy allows everything S3 on the platform's buckets,
except what would let a credential or a link reach beyond its objects::

    role_policy(buckets) ==
    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Allow", "Action": ["s3:*"],
                    "Resource": ["arn:aws:s3:::<b>", "arn:aws:s3:::<b>/*", ...]},
                   {"Effect": "Deny", "Action": ["s3:PutObject"],
                    "Resource": ["arn:aws:s3:::<b>/*", ...],
                    "Condition": {"StringLike": {"s3:x-amz-copy-source": ["*"]}}},
                   ... the same Deny for "StringEquals" "s3:x-amz-acl" in
                   PUBLIC_CANNED_ACLS, and one per "s3:x-amz-grant-*" key]}

Why these denies, and why in the role policy (measured on 16.2.15):
radosgw accepts UNSIGNED ``x-amz-*`` headers on a presigned request (AWS
refuses them), so a presigned PUT plus ``x-amz-copy-source`` becomes a
CopyObject of any object the signer may read, and ``x-amz-acl: public-read``
or ``x-amz-grant-read`` publishes it. PutObject puts ``s3:x-amz-acl`` (empty
when absent) and the present ``s3:x-amz-grant-*`` keys in the policy
environment, CopyObject ``s3:x-amz-copy-source``; a Deny on them works in the
role policy for PutObject and CopyObject, but a SESSION policy's Deny is not
evaluated for the destination of a CopyObject at all (even a Deny without a
condition). ``Null`` conditions evaluate inverted (``"false"`` matches an
absent key), so none are used; ``sts:authentication`` tells a presigned
request from a signed one only until the holder adds the URL's token as an
``x-amz-security-token`` header, so copies are refused for every request.
Signing cannot close this: radosgw hoists a signed ``x-amz-meta-*`` query
parameter but ignores a signed ``x-amz-acl`` one, and a signed header must
then be sent by every holder of the link. CreateMultipartUpload carries no
ACL condition key, so the buckets also set a public access block with
``IgnorePublicAcls``: an anonymous request never reads an object, whatever
ACL it carries. They abort incomplete multipart uploads after
``ABORT_INCOMPLETE_UPLOADS_DAYS`` (:data:`LIFECYCLE`), as production stores
should.

Every AssumeRoleWithWebIdentity call passes a SESSION policy narrowing the
credentials to one workspace (bucket + prefix); the effective permissions are
the intersection of role policy and session policy::

    session_policy(bucket, prefix) ==
    {"Version": "2012-10-17",
     "Statement": [
       {"Effect": "Allow", "Action": ["s3:ListBucket"],
        "Resource": ["arn:aws:s3:::<bucket>"],
        "Condition": {"StringLike": {"s3:prefix": ["<prefix>*"]}}},
       {"Effect": "Allow", "Action": ["s3:GetBucketLocation",
                                      "s3:ListBucketMultipartUploads"],
        "Resource": ["arn:aws:s3:::<bucket>"]},
       {"Effect": "Allow",
        "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                   "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
        "Resource": ["arn:aws:s3:::<bucket>/<prefix>*"]}]}

Measured in the session policy: ``s3:prefix`` on ListBucket is evaluated
(ListObjectsV2 without ``Prefix`` or with ``Prefix="a2"`` is AccessDenied),
object ARNs with ``prefix*`` are enforced, ListMultipartUploads needs
``s3:ListBucketMultipartUploads`` on the bucket.

STS: ``DurationSeconds`` from 1 (``rgw sts min session duration``, set to
``MIN_STS_DURATION`` = 1 here) to the role's MaxSessionDuration (3600 by
default); 0 or more is HTTP 400. Credentials stop working to the second of
their ``Expiration``. ``RoleSessionName`` must be 2-64 characters (else 400).
radosgw fetches the issuer's discovery document and JWKS on every call.

Integrity checks radosgw 16 enforces (measured): ``Content-MD5`` on PutObject
and UploadPart (400 BadDigest), ``x-amz-content-sha256`` (400
XAmzContentSHA256Mismatch). It IGNORES ``x-amz-checksum-crc32`` (a wrong
value is stored with 200 and nothing is echoed back) and does NOT understand
``aws-chunked`` bodies with a checksum trailer
(``STREAMING-UNSIGNED-PAYLOAD-TRAILER``: 400 XAmzContentSHA256Mismatch), which
boto3 >= 1.36 sends by default over HTTPS: S3 clients meant for
S3-compatible servers should set ``request_checksum_calculation="when_required"``.
Over plain http boto3 1.44 sends ``x-amz-checksum-crc32`` as a header (accepted,
unchecked).

radosgw quirks handled here: the policy JSON must be compact (no spaces: the
form body's ``+`` is not decoded as a space), ``DurationSeconds`` below 900
needs botocore's parameter validation off, and STS error responses carry no
error code (mapped to :class:`StsError`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import lifeline
from ._gateway import S3Gateway, compact_json, ensure_role
from .ports import free_port, wait_until_ready

REGION = "us-east-1"
#: smallest ``DurationSeconds`` this radosgw accepts (``rgw sts min session duration``)
MIN_STS_DURATION = 1
_BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool")


class RadosGatewayError(RuntimeError):
    """The throwaway Ceph cluster could not be started or driven."""


class StsError(RadosGatewayError):
    """radosgw refused an STS call (its error responses carry no code)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def missing_binaries() -> list[str]:
    """The Ceph binaries that are not on PATH (empty when radosgw can run)."""
    return [b for b in _BINARIES if shutil.which(b) is None]


def _ceph_key() -> str:
    """A cephx secret in Ceph's keyring encoding (type, created, len, 16 bytes)."""
    secret = os.urandom(16)
    blob = struct.pack("<HIIH", 1, int(time.time()), 0, len(secret)) + secret
    return base64.b64encode(blob).decode("ascii")


def idp_id(issuer_url: str) -> str:
    """How radosgw names an issuer in ARNs and condition keys: host + path."""
    parts = urlsplit(issuer_url)
    return (parts.netloc + parts.path).rstrip("/")


def trust_policy(issuer_url: str, audience: str | None = None) -> dict[str, Any]:
    """Trust policy of a platform role: tokens of ``issuer_url`` (for ``audience``)."""
    stmt: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Federated": [f"arn:aws:iam:::oidc-provider/{idp_id(issuer_url)}"]},
        "Action": ["sts:AssumeRoleWithWebIdentity"],
    }
    if audience is not None:
        stmt["Condition"] = {"StringEquals": {f"{idp_id(issuer_url)}:aud": audience}}
    return {"Version": "2012-10-17", "Statement": [stmt]}


#: canned ACLs that open an object to more than its workspace
PUBLIC_CANNED_ACLS = ("public-read", "public-read-write", "authenticated-read")
#: the grant headers, as condition keys (any grant widens who may use an object)
GRANT_CONDITION_KEYS = (
    "s3:x-amz-grant-read",
    "s3:x-amz-grant-write",
    "s3:x-amz-grant-read-acp",
    "s3:x-amz-grant-write-acp",
    "s3:x-amz-grant-full-control",
)


def _deny_put_when(objects: list[str], condition: dict[str, Any]) -> dict[str, Any]:
    return {
        "Effect": "Deny",
        "Action": ["s3:PutObject"],
        "Resource": objects,
        "Condition": condition,
    }


def role_policy(buckets: list[str]) -> dict[str, Any]:
    """Role policy: ``s3:*`` on the platform's buckets and their objects, except
    server-side copies, public canned ACLs and grants (see the module docstring)."""
    resources = []
    for b in buckets:
        resources += [f"arn:aws:s3:::{b}", f"arn:aws:s3:::{b}/*"]
    objects = [f"arn:aws:s3:::{b}/*" for b in buckets]
    denies = [
        _deny_put_when(objects, {"StringLike": {"s3:x-amz-copy-source": ["*"]}}),
        _deny_put_when(objects, {"StringEquals": {"s3:x-amz-acl": list(PUBLIC_CANNED_ACLS)}}),
        *(_deny_put_when(objects, {"StringLike": {key: ["*"]}}) for key in GRANT_CONDITION_KEYS),
    ]
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": resources}, *denies],
    }


#: objects are never readable anonymously, whatever ACL they carry
PUBLIC_ACCESS_BLOCK = {
    "IgnorePublicAcls": True,
    # radosgw 16 with BlockPublicAcls refuses even a PutObject without any ACL
    # (measured); the role policy refuses public ACLs instead
    "BlockPublicAcls": False,
    "BlockPublicPolicy": False,
    "RestrictPublicBuckets": False,
}
#: incomplete multipart uploads are aborted (their parts freed) a day after they start
ABORT_INCOMPLETE_UPLOADS_DAYS = 1
LIFECYCLE = {
    "Rules": [
        {
            "ID": "abort-incomplete-multipart-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {
                "DaysAfterInitiation": ABORT_INCOMPLETE_UPLOADS_DAYS
            },
        }
    ]
}


def session_policy(bucket: str, prefix: str) -> dict[str, Any]:
    """Session policy: narrows credentials to ``bucket``/``prefix`` (a workspace)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            },
            {
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
            {
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*"],
            },
        ],
    }


class RadosGateway(S3Gateway):
    """A throwaway single-node Ceph cluster with radosgw (S3 + STS + IAM)."""

    region = REGION

    def __init__(
        self,
        *,
        memstore_bytes: int = 4 << 30,
        min_sts_duration: int = MIN_STS_DURATION,
        startup_timeout: float = 60.0,
        log_level: int = 0,
    ) -> None:
        self.memstore_bytes = memstore_bytes
        self.min_sts_duration = min_sts_duration
        self.startup_timeout = startup_timeout
        self.log_level = log_level
        self.workdir: Path | None = None
        self.endpoint_url = ""
        self.admin_access_key = ""
        self.admin_secret_key = ""
        self.mon_port = 0
        self.rgw_port = 0
        self.osd_id = ""
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._admin: Any = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def running(self) -> bool:
        return bool(self._procs)

    def start(self) -> RadosGateway:
        if self._procs:
            raise RadosGatewayError("RadosGateway already started")
        missing = missing_binaries()
        if missing:
            raise RadosGatewayError(
                f"Ceph binaries not found on PATH: {', '.join(missing)}; "
                "run `make setup` (devstack/install-system-deps.sh installs "
                "ceph-mon ceph-osd radosgw ceph-common on Debian/Ubuntu)"
            )
        self.workdir = lifeline.mkdtemp("sts-bridge-rgw-")
        try:
            self._bootstrap()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        procs, self._procs = self._procs, {}
        for proc in procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self._admin = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # ---------------------------------------------------------------- bootstrap
    def _conf_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "ceph.conf"

    def _write_conf(self, fsid: str) -> None:
        w = self.workdir
        assert w is not None
        lvl = self.log_level
        conf = f"""[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{self.mon_port}]
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
ms mon client mode = crc
keyring = {w}/keyring
run dir = {w}/run
admin socket = {w}/run/$name.asok
log file = {w}/log/$name.log
log to stderr = false
err to stderr = true
debug ms = 0
debug mon = {lvl}
debug osd = {lvl}
debug rgw = {lvl}
debug paxos = 0
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon allow pool delete = true
osd crush chooseleaf type = 0
mon max pg per osd = 1000

[mon]
mon data = {w}/mon
paxos propose interval = 0.05
paxos min wait = 0.01
mon osd full ratio = 0.98
mon osd backfillfull ratio = 0.97
mon osd nearfull ratio = 0.95

[osd]
osd data = {w}/osd
osd objectstore = memstore
memstore device bytes = {self.memstore_bytes}
osd op num shards = 2
osd op num threads per shard = 1
# short placement-group logs: every write adds an entry that holds memory
# until the log is trimmed, and with the defaults (thousands per PG) a long
# run of overwrites grew the OSD by ~21 MiB/min; one OSD never recovers from
# a peer, so it needs no long log
osd min pg log entries = 10
osd max pg log entries = 20
osd pg log dups tracked = 10
osd pg log trim min = 5

[client.rgw]
# tcp_nodelay: as production gateways run; with Nagle on, a small GET body
# waits for the client's delayed ACK of the headers (about 40 ms per request)
rgw frontends = beast endpoint=127.0.0.1:{self.rgw_port} tcp_nodelay=1
rgw enable apis = s3, admin, sts, iam
rgw s3 auth use sts = true
rgw sts key = {uuid.uuid4().hex[:16]}
rgw sts min session duration = {self.min_sts_duration}
rgw thread pool size = 64
rgw dns name = 127.0.0.1
rgw enable usage log = false
rgw enable ops log = false
# reclaim overwritten/deleted objects within seconds (memstore is RAM)
rgw gc obj min wait = 2
rgw gc processor period = 5
rgw gc processor max time = 5
"""
        self._conf_path().write_text(conf)

    def gc(self, timeout: float = 120.0) -> None:
        """Run radosgw's garbage collector now.

        memstore keeps the tails of deleted or overwritten objects in RAM until
        GC runs; long benchmarks call this between rounds.
        """
        self._run("radosgw-admin", "gc", "process", "--include-all", timeout=timeout)

    def gc_pending(self) -> int:
        """How many deleted or overwritten objects wait for the garbage collector."""
        return len(json.loads(self._run("radosgw-admin", "gc", "list", "--include-all")))

    def osd_memory_pools(self) -> dict[str, int]:
        """Bytes the OSD's memory pools hold, by pool and ``"total"`` (memstore's
        objects, the placement-group logs, ...): what the OSD keeps, unlike its
        RSS, which also counts memory its allocator has not returned yet."""
        pools = json.loads(self._run("ceph", "daemon", f"osd.{self.osd_id}", "dump_mempools"))[
            "mempool"
        ]
        sizes = {name: int(pool["bytes"]) for name, pool in pools["by_pool"].items()}
        sizes["total"] = int(pools["total"]["bytes"])
        return sizes

    def _run(self, *args: str, timeout: float = 30.0) -> str:
        cmd = [args[0], "-c", str(self._conf_path()), *args[1:]]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RadosGatewayError(f"{' '.join(cmd)} timed out after {timeout} s") from exc
        if done.returncode != 0:
            raise RadosGatewayError(
                f"{' '.join(args)} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace').strip()[-2000:]}"
            )
        return done.stdout.decode()

    def _spawn(self, name: str, *args: str) -> None:
        assert self.workdir is not None
        out = open(self.workdir / "log" / f"{name}.stderr", "wb")  # noqa: SIM115
        try:
            proc = lifeline.popen(
                [args[0], "-f", "-c", str(self._conf_path()), *args[1:]],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            out.close()
        self._procs[name] = proc

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise RadosGatewayError(f"{name} exited with {proc.returncode}: {self._tail(name)}")

    def _tail(self, name: str) -> str:
        assert self.workdir is not None
        text = ""
        for f in (self.workdir / "log" / f"{name}.stderr",):
            with contextlib.suppress(OSError):
                text += f.read_text(errors="replace")[-1500:]
        return text.strip()

    def _bootstrap(self) -> None:
        w = self.workdir
        assert w is not None
        for sub in ("run", "log", "mon", "osd"):
            (w / sub).mkdir()
        self.mon_port = free_port()
        self.rgw_port = free_port()
        while self.rgw_port == self.mon_port:
            self.rgw_port = free_port()
        fsid = str(uuid.uuid4())
        self._write_conf(fsid)
        (w / "keyring").write_text(f'[mon.]\n\tkey = {_ceph_key()}\n\tcaps mon = "allow *"\n')
        deadline = time.monotonic() + self.startup_timeout

        # monitor
        subprocess.run(
            [
                "monmaptool",
                "--create",
                "--fsid",
                fsid,
                "--addv",
                "a",
                f"[v2:127.0.0.1:{self.mon_port}]",
                str(w / "monmap"),
            ],
            check=True,
            capture_output=True,
        )
        self._run(
            "ceph-mon",
            "--mkfs",
            "-i",
            "a",
            "--monmap",
            str(w / "monmap"),
            "--keyring",
            str(w / "keyring"),
        )
        self._spawn("mon", "ceph-mon", "-i", "a")

        # osd (the monitor answers "osd new" as soon as it has formed a quorum)
        osd_uuid = str(uuid.uuid4())
        osd_id = self.osd_id = self._run("ceph", "osd", "new", osd_uuid, timeout=20).strip()
        self._run("ceph-osd", "--mkfs", "-i", osd_id, "--osd-uuid", osd_uuid)
        self._spawn("osd", "ceph-osd", "-i", osd_id)

        # realm/zonegroup/zone named after the region: without them radosgw
        # answers GetBucketLocation with "default" (the zonegroup's api name)
        self._run("radosgw-admin", "realm", "create", "--rgw-realm", "local", "--default")
        self._run(
            "radosgw-admin",
            "zonegroup",
            "create",
            "--rgw-zonegroup",
            self.region,
            "--api-name",
            self.region,
            "--master",
            "--default",
        )
        self._run(
            "radosgw-admin",
            "zone",
            "create",
            "--rgw-zonegroup",
            self.region,
            "--rgw-zone",
            self.region,
            "--master",
            "--default",
        )
        self._run("radosgw-admin", "period", "update", "--commit")
        # radosgw (creates its pools itself)
        self._spawn("rgw", "radosgw", "-n", "client.rgw")
        self.endpoint_url = f"http://127.0.0.1:{self.rgw_port}"
        while True:
            self._check_alive()
            try:
                wait_until_ready(self.endpoint_url, timeout=0.5, what="radosgw")
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise RadosGatewayError(
                        f"radosgw did not answer within {self.startup_timeout} s: "
                        f"{self._tail('rgw')}"
                    ) from None

        # the admin user (role, user-policy and oidc-provider caps)
        self.admin_access_key, self.admin_secret_key = self.create_user(
            "sts-bridge-admin", caps="roles=*;user-policy=*;oidc-provider=*;users=*;buckets=*"
        )

    # ------------------------------------------------------------------ clients
    def _admin_client(self, service: str) -> Any:
        return self.client(service, parameter_validation=False)

    # --------------------------------------------------------------- operations
    def create_user(self, uid: str, *, caps: str | None = None) -> tuple[str, str]:
        """A radosgw user with fresh S3 keys: ``(access_key, secret_key)``."""
        if not self._procs:
            raise RadosGatewayError("RadosGateway is not running")
        access = uuid.uuid4().hex[:20].upper()
        secret = base64.b64encode(os.urandom(30)).decode("ascii")
        args = [
            "radosgw-admin",
            "user",
            "create",
            "--uid",
            uid,
            "--display-name",
            uid,
            "--access-key",
            access,
            "--secret",
            secret,
        ]
        if caps:
            args += ["--caps", caps]
        self._run(*args)
        return access, secret

    def create_bucket(self, name: str) -> None:
        """A bucket owned by the admin user (idempotent)."""
        s3 = self._admin_client("s3")
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)

    def register_oidc_provider(self, issuer_url: str, client_ids: list[str]) -> str:
        """CreateOpenIDConnectProvider (idempotent); returns the provider ARN."""
        from botocore.exceptions import ClientError

        iam = self._admin_client("iam")
        arn = f"arn:aws:iam:::oidc-provider/{idp_id(issuer_url)}"
        try:
            resp = iam.create_open_id_connect_provider(
                Url=issuer_url,
                ClientIDList=list(client_ids),
                # required to be non-empty; radosgw 16 does not check it
                ThumbprintList=["0" * 40],
            )
            return str(resp.get("OpenIDConnectProviderArn") or arn)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "EntityAlreadyExists" or status == 409:
                return arn
            raise RadosGatewayError(f"CreateOpenIDConnectProvider failed: {exc}") from exc

    def create_role(
        self,
        name: str,
        trust_policy: dict[str, Any],
        role_policy: dict[str, Any],
        *,
        max_session_duration: int = 3600,
    ) -> str:
        """A role with ``trust_policy`` and an inline ``role_policy``; returns its ARN."""
        return ensure_role(
            self._admin_client("iam"),
            name,
            trust_policy,
            role_policy,
            max_session_duration=max_session_duration,
            error=RadosGatewayError,
        )

    def assume_role_with_web_identity(
        self,
        role_arn: str,
        web_identity_token: str,
        session_name: str,
        duration_seconds: int = 900,
        policy: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """STS AssumeRoleWithWebIdentity (unsigned, as AWS defines it).

        Returns ``{"access_key", "secret_key", "session_token", "expiration"}``
        (``expiration`` a tz-aware datetime); raises :class:`StsError`.
        """
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        sts = boto3.client(
            "sts",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            config=Config(
                signature_version=UNSIGNED,
                parameter_validation=False,
                retries={"max_attempts": 1, "mode": "standard"},
            ),
        )
        kwargs: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": session_name,
            "WebIdentityToken": web_identity_token,
            "DurationSeconds": int(duration_seconds),
        }
        if policy is not None:
            kwargs["Policy"] = compact_json(policy)
        try:
            resp = sts.assume_role_with_web_identity(**kwargs)
        except ClientError as exc:
            meta = exc.response.get("ResponseMetadata", {})
            status = meta.get("HTTPStatusCode")
            err = exc.response.get("Error", {})
            detail = err.get("Code") or err.get("Message") or "no error code"
            raise StsError(
                f"AssumeRoleWithWebIdentity refused (HTTP {status}, {detail}) for "
                f"role {role_arn}: token invalid, expired, for another audience or "
                "issuer, or not allowed by the role's trust policy",
                status,
            ) from exc
        except BotoCoreError as exc:
            raise StsError(f"AssumeRoleWithWebIdentity failed: {exc}") from exc
        c = resp["Credentials"]
        return {
            "access_key": c["AccessKeyId"],
            "secret_key": c["SecretAccessKey"],
            "session_token": c["SessionToken"],
            "expiration": c["Expiration"],
        }
