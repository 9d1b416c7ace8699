"""``StoragePoint``: what a TerrAPI workspace description means for an S3 client.

The API describes a storage point loosely: every ``properties`` value is a
LIST (``bucket: [gep-processing-results]``), the endpoint may be in
``properties.service_url``, ``end_point`` or ``service_uri``, the prefix in
``properties.key`` or only in ``storage_url``/``resource_uris``. This module
turns that into one typed, frozen value and refuses descriptions sts-bridge
cannot use with a :class:`~sts_bridge.errors.WorkspaceError`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from sts_bridge.errors import WorkspaceError

__all__ = ["DEFAULT_REGION", "StoragePoint", "normalise_prefix"]

DEFAULT_REGION = "us-east-1"


def normalise_prefix(prefix: str | None) -> str:
    """``'a2s'`` -> ``'a2s/'``, ``'/a/b//'`` -> ``'a/b/'``, ``''``/``'/'``/None -> ``''``."""
    if not prefix:
        return ""
    parts = [p for p in prefix.strip().split("/") if p]
    return "/".join(parts) + "/" if parts else ""


def _text(value: Any) -> str | None:
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _first(properties: Mapping[str, Any], *names: str) -> str | None:
    """The first non-empty value of the first property present (values are lists)."""
    for name in names:
        raw = properties.get(name)
        values: Sequence[Any] = raw if isinstance(raw, (list, tuple)) else [raw]
        for value in values:
            text = _text(value)
            if text is not None:
                return text
    return None


def _bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _split_s3_uri(uri: str | None) -> tuple[str | None, str]:
    if not uri or not uri.startswith("s3://"):
        return None, ""
    parts = urlsplit(uri)
    return (parts.netloc or None), parts.path.lstrip("/")


def _is_aws(endpoint: str) -> bool:
    host = (urlsplit(endpoint).hostname or "").lower()
    return host == "amazonaws.com" or host.endswith(".amazonaws.com")


def _aws_region(endpoint: str) -> str | None:
    host = (urlsplit(endpoint).hostname or "").lower()
    labels = host.split(".")
    # s3.eu-west-1.amazonaws.com / s3-eu-west-1.amazonaws.com / bucket.s3.eu-west-1...
    for i, label in enumerate(labels[:-2]):
        if label == "s3" and i + 1 < len(labels) - 2:
            return labels[i + 1]
        if label.startswith("s3-") and len(label) > 3:
            return label[3:]
    return None


@dataclass(frozen=True)
class StoragePoint:
    """An S3 workspace, as sts-bridge uses it (frozen).

    ``prefix`` ends with ``/`` or is empty; ``endpoint_url`` has no trailing
    slash; ``addressing_style`` is ``path`` (S3-compatible servers) or
    ``virtual`` (AWS).
    """

    name: str
    bucket: str
    prefix: str
    endpoint_url: str
    region: str = DEFAULT_REGION
    addressing_style: str = "path"
    use_token: bool = True
    scopes: tuple[str, ...] = ()
    platform_id: str | None = None
    owner: str | None = None
    storage_url: str | None = None

    @property
    def url(self) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self.prefix}"

    @classmethod
    def from_api(cls, model: Any) -> StoragePoint:
        """Build from a generated ``IStoragePoint``/``IWorkspace`` (or a plain dict).

        Raises :class:`WorkspaceError` for a storage point that is not S3 or
        has no bucket.
        """

        def get(key: str) -> Any:
            if isinstance(model, Mapping):
                return model.get(key)
            return getattr(model, key, None)

        name = _text(get("name")) or "?"
        properties: Mapping[str, Any] = get("properties") or {}
        if not isinstance(properties, Mapping):
            properties = {}
        resource_uris = [u for u in (get("resource_uris") or []) if isinstance(u, str)]

        storage_type = _text(get("storage_type")) or _first(properties, "storage_type") or ""
        storage_type = storage_type.lower()
        if storage_type and storage_type != "s3":
            raise WorkspaceError(
                f"workspace {name!r} is a {storage_type!r} storage point, not S3; "
                "sts-bridge can only use S3 workspaces",
                hint="pick an S3 workspace from `sts-bridge workspaces`",
            )

        storage_url = _first(properties, "storage_url") or next(
            (u for u in resource_uris if u.startswith("s3://")), None
        )
        uri_bucket, uri_prefix = _split_s3_uri(storage_url)
        bucket = _first(properties, "bucket") or uri_bucket
        if not bucket:
            raise WorkspaceError(
                f"workspace {name!r} has no bucket in its description "
                "(properties.bucket, storage_url and resource_uris are all empty)",
                hint="report this to the platform operators",
            )
        if not storage_type and not storage_url:
            raise WorkspaceError(
                f"workspace {name!r} does not say it is S3 storage (no storage_type)",
                hint="report this to the platform operators",
            )
        key = _first(properties, "key", "prefix")
        prefix = normalise_prefix(key if key is not None else uri_prefix)

        endpoint = (
            _first(properties, "service_url", "endpoint_url", "end_point")
            or _text(get("end_point"))
            or _text(get("service_uri"))
        )
        region = _first(properties, "region")
        if endpoint is None:
            region = region or DEFAULT_REGION
            endpoint = f"https://s3.{region}.amazonaws.com"
        endpoint = endpoint.rstrip("/")
        if not urlsplit(endpoint).scheme:
            endpoint = "https://" + endpoint
        aws = _is_aws(endpoint)
        if region is None:
            region = (_aws_region(endpoint) if aws else None) or DEFAULT_REGION
        style = (_first(properties, "addressing_style") or "").lower()
        if style not in ("path", "virtual"):
            style = "virtual" if aws else "path"
        scopes = tuple(s for s in (get("scopes") or []) if isinstance(s, str))
        return cls(
            name=name,
            bucket=bucket,
            prefix=prefix,
            endpoint_url=endpoint,
            region=region,
            addressing_style=style,
            use_token=_bool(_first(properties, "use_token"), True),
            scopes=scopes,
            platform_id=_text(get("platform_id")) or _first(properties, "platform_id"),
            owner=_text(get("owner")),
            storage_url=storage_url,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (no credentials in it)."""
        data = asdict(self)
        data["scopes"] = list(self.scopes)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> StoragePoint:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on a malformed document."""
        if not isinstance(data, dict):
            raise ValueError("storage point is not an object")
        try:
            for required in ("name", "bucket", "prefix", "endpoint_url", "region"):
                if not isinstance(data[required], str):
                    raise ValueError(f"{required} is not a string")
            style = data.get("addressing_style", "path")
            if style not in ("path", "virtual"):
                raise ValueError("bad addressing_style")
            return cls(
                name=data["name"],
                bucket=data["bucket"],
                prefix=normalise_prefix(data["prefix"]),
                endpoint_url=data["endpoint_url"],
                region=data["region"],
                addressing_style=style,
                use_token=bool(data.get("use_token", True)),
                scopes=tuple(str(s) for s in data.get("scopes") or ()),
                platform_id=data.get("platform_id"),
                owner=data.get("owner"),
                storage_url=data.get("storage_url"),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed storage point: {exc}") from exc
