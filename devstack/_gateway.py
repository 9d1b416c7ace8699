"""What the two S3 backends of the local platform (radosgw, moto) share."""

from __future__ import annotations

import json
from typing import Any, TypeVar

_G = TypeVar("_G", bound="S3Gateway")


def compact_json(doc: dict[str, Any]) -> str:
    """Policy JSON as S3-compatible servers want it: compact and deterministic.

    radosgw does not decode ``+`` as a space in form bodies, so no blanks at
    all; sorted keys make equal policies byte-equal (moto role names hash them).
    """
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def ensure_role(
    iam: Any,
    name: str,
    trust_policy: dict[str, Any],
    role_policy: dict[str, Any],
    *,
    max_session_duration: int = 3600,
    error: type[Exception] = RuntimeError,
) -> str:
    """CreateRole (or update its trust policy) + PutRolePolicy; returns the ARN.

    Re-creating a role updates it, so platforms can be configured idempotently.
    """
    from botocore.exceptions import ClientError

    try:
        resp = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=compact_json(trust_policy),
            MaxSessionDuration=max_session_duration,
        )
        arn = str(resp["Role"]["Arn"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "EntityAlreadyExists":
            raise error(f"CreateRole {name} failed: {exc}") from exc
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=compact_json(trust_policy))
        arn = str(iam.get_role(RoleName=name)["Role"]["Arn"])
    iam.put_role_policy(
        RoleName=name, PolicyName=f"{name}-policy", PolicyDocument=compact_json(role_policy)
    )
    return arn


class S3Gateway:
    """Base of :class:`~sts_bridge_devstack.s3.RadosGateway` and
    :class:`~sts_bridge_devstack.s3_moto.MotoGateway`: a context manager over
    ``start()``/``stop()`` and boto3 clients on the gateway's endpoint."""

    endpoint_url: str
    region: str
    admin_access_key: str
    admin_secret_key: str

    def start(self: _G) -> _G:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _G) -> _G:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def apply_bucket_rules(
        self, bucket: str, public_access_block: dict[str, bool], lifecycle: dict[str, Any]
    ) -> None:
        """The platform's bucket settings: a public access block and a lifecycle."""
        s3 = self.client("s3")
        s3.put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration=public_access_block
        )
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=lifecycle)

    def client(
        self,
        service: str,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        **config: Any,
    ) -> Any:
        """A boto3 client (path-style, SigV4) on this gateway; admin keys by default."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key or self.admin_access_key,
            aws_secret_access_key=secret_key or self.admin_secret_key,
            aws_session_token=session_token,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1, "mode": "standard"},
                **config,
            ),
        )
