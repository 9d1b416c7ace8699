"""The S3 side of the reference server: STS issuance and presigned downloads."""

from __future__ import annotations

import datetime as dt
import re
import threading
from typing import Any

from .._gateway import compact_json
from .policy import StoragePoint


class StorageError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def session_policy_for(point: StoragePoint) -> dict[str, Any]:
    """Session policy narrowing the role to the storage point's bucket/prefix."""
    b, p = point.bucket, point.prefix
    objects = (
        ["s3:GetObject"]
        if point.read_only
        else [
            "s3:GetObject",
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:AbortMultipartUpload",
            "s3:ListMultipartUploadParts",
        ]
    )
    # s3:ListBucketMultipartUploads is not granted: it names the bucket, and
    # radosgw 16 does not evaluate s3:prefix for it (measured: with the
    # condition, even the owner's own prefix is AccessDenied; without it,
    # alice lists bob's upload keys). Resuming needs only ListParts, which
    # names the object and is confined like every object action.
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{b}"],
                "Condition": {"StringLike": {"s3:prefix": [f"{p}*"]}},
            },
            {
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation"],
                "Resource": [f"arn:aws:s3:::{b}"],
            },
            {"Effect": "Allow", "Action": objects, "Resource": [f"arn:aws:s3:::{b}/{p}*"]},
        ],
    }


def session_name(username: str) -> str:
    """A RoleSessionName ([\\w+=,.@-]{2,64}) for ``username``."""
    name = re.sub(r"[^\w+=,.@-]", "-", username)[:64]
    return name if len(name) >= 2 else f"{name}--"[:2]


class S3Backend:
    def __init__(
        self,
        endpoint_url: str,
        region: str,
        role_arn: str,
        duration_seconds: int,
        download_expires_in: int = 3600,
        *,
        admin_keys: tuple[str, str] | None = None,
    ) -> None:
        """``admin_keys`` set = the moto fallback: the caller's JWT has already
        been verified by the API (moto never validates web identity tokens and
        ignores session policies), so credentials come from a SIGNED AssumeRole
        with these keys onto a role whose inline policy IS the session policy
        (one role per distinct policy, created on first use)."""
        self.endpoint_url = endpoint_url.rstrip("/")
        self.region = region
        self.role_arn = role_arn
        self.duration_seconds = int(duration_seconds)
        self.download_expires_in = int(download_expires_in)
        self.admin_keys = admin_keys
        self._lock = threading.Lock()
        self._sts: Any = None
        self._admin: dict[str, Any] = {}
        self._roles: dict[str, str] = {}

    def _admin_client(self, service: str) -> Any:
        with self._lock:
            if service not in self._admin:
                import boto3
                from botocore.config import Config

                assert self.admin_keys is not None
                self._admin[service] = boto3.session.Session().client(
                    service,
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    aws_access_key_id=self.admin_keys[0],
                    aws_secret_access_key=self.admin_keys[1],
                    config=Config(
                        parameter_validation=False,  # DurationSeconds < 900
                        retries={"max_attempts": 1, "mode": "standard"},
                        connect_timeout=5,
                        read_timeout=15,
                    ),
                )
            return self._admin[service]

    def _role_for(self, policy: dict[str, Any]) -> str:
        from ..s3_moto import (
            MotoGatewayError,
            admin_trust_policy,
            ensure_role,
            role_name_for_policy,
            with_moto_action_names,
        )

        name = role_name_for_policy(policy)
        with self._lock:
            arn = self._roles.get(name)
        if arn is None:
            arn = ensure_role(
                self._admin_client("iam"),
                name,
                admin_trust_policy(),
                with_moto_action_names(policy),
                error=MotoGatewayError,
            )
            with self._lock:
                self._roles[name] = arn
        return arn

    def _credentials(
        self, web_identity_token: str, username: str, policy: dict[str, Any]
    ) -> dict[str, Any]:
        """STS ``Credentials`` (boto3 shape) limited to ``policy``."""
        if self.admin_keys is not None:
            return dict(
                self._admin_client("sts").assume_role(
                    RoleArn=self._role_for(policy),
                    RoleSessionName=session_name(username),
                    DurationSeconds=self.duration_seconds,
                )["Credentials"]
            )
        return dict(
            self._sts_client().assume_role_with_web_identity(
                RoleArn=self.role_arn,
                RoleSessionName=session_name(username),
                WebIdentityToken=web_identity_token,
                DurationSeconds=self.duration_seconds,
                Policy=compact_json(policy),
            )["Credentials"]
        )

    def _sts_client(self) -> Any:
        with self._lock:
            if self._sts is None:
                import boto3
                from botocore import UNSIGNED
                from botocore.config import Config

                session = boto3.session.Session()
                self._sts = session.client(
                    "sts",
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    config=Config(
                        signature_version=UNSIGNED,
                        parameter_validation=False,  # DurationSeconds < 900
                        retries={"max_attempts": 1, "mode": "standard"},
                        connect_timeout=5,
                        read_timeout=15,
                    ),
                )
            return self._sts

    def assume_role(
        self, web_identity_token: str, username: str, point: StoragePoint
    ) -> dict[str, Any]:
        """AssumeRoleWithWebIdentity with the caller's token and a session policy."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            c = self._credentials(web_identity_token, username, session_policy_for(point))
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise StorageError(
                403,
                f"the storage refused to issue credentials for {point.name} "
                f"(STS answered HTTP {status})",
            ) from None
        except BotoCoreError as exc:
            raise StorageError(
                503, f"the storage STS endpoint failed: {type(exc).__name__}"
            ) from None
        exp = c["Expiration"]
        if isinstance(exp, dt.datetime):
            exp = exp.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
        return {
            "access_key": c["AccessKeyId"],
            "secret_key": c["SecretAccessKey"],
            "use_token": True,
            "token": c["SessionToken"],
            "expiration": exp,
        }

    def presign_get(
        self, web_identity_token: str, username: str, bucket: str, key: str
    ) -> tuple[str, str]:
        """(presigned GET URL, expiration ISO string) for one object.

        Signed with STS credentials obtained with the caller's token and a
        session policy allowing only ``s3:GetObject`` on that object (objects
        written through STS sessions are not readable by the bucket owner in
        radosgw, and a link must not outlive the caller's rights anyway): the
        link dies with those credentials, as on the real platform.
        """
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{bucket}/{key}"],
                }
            ],
        }
        try:
            c = self._credentials(web_identity_token, username, policy)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise StorageError(
                403, f"the storage refused to sign a download link (STS answered HTTP {status})"
            ) from None
        except BotoCoreError as exc:
            raise StorageError(
                503, f"the storage STS endpoint failed: {type(exc).__name__}"
            ) from None
        expiry = c["Expiration"]
        if not isinstance(expiry, dt.datetime):
            expiry = dt.datetime.fromisoformat(str(expiry).replace("Z", "+00:00"))
        now = dt.datetime.now(dt.timezone.utc)
        expires_in = max(1, min(self.download_expires_in, int((expiry - now).total_seconds())))
        s3 = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=c["AccessKeyId"],
            aws_secret_access_key=c["SecretAccessKey"],
            aws_session_token=c["SessionToken"],
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in
        )
        exp = min(expiry, now + dt.timedelta(seconds=expires_in))
        return str(url), exp.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat().replace(
            "+00:00", "Z"
        )
