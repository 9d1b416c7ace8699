"""A fast AWS Signature Version 4 signer for S3 (query-string presigning and headers).

botocore's ``generate_presigned_url`` builds a full request object, runs the
event system and derives the signing key for every URL: about a few hundred
microseconds each. Sharing 10,000 results that way takes seconds. Here
everything that does not depend on the key is computed once per signer: the
signing key (per day, region and service), the credential scope, the
canonical query string, the host header and the URL prefix. Per key only the
path is quoted and two SHA-256 operations run.

The output is byte-identical to botocore's (``signature_version="s3v4"``) for
the same time, credentials, region, endpoint, bucket, addressing style and
key; ``tests/unit/test_s3_signer.py`` checks that. Rules copied from botocore:

- the key is percent-encoded from UTF-8 with only ``/`` and ``~`` (plus
  letters, digits and ``_.-``) left as they are, and the S3 path is not
  normalised further;
- query parameters are encoded with ``-_.~`` safe; the URL lists them in
  botocore's order, the canonical request sorts them;
- the ``host`` header drops the default port of the scheme; the payload is
  ``UNSIGNED-PAYLOAD`` (RFC: a presigned URL cannot know its body).

This module has no third-party imports, so the CLI's ``presign`` command
does not pay for importing boto3.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Protocol
from urllib.parse import quote, urlsplit

from sts_bridge.clock import utc_now

__all__ = [
    "EMPTY_SHA256",
    "MAX_EXPIRES",
    "UNSIGNED_PAYLOAD",
    "CredentialsLike",
    "Signer",
    "StorePlace",
    "quote_key",
]

MAX_EXPIRES = 7 * 24 * 3600  # SigV4 limit for X-Amz-Expires
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ALGORITHM = "AWS4-HMAC-SHA256"
_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_METHODS = frozenset({"GET", "PUT", "HEAD", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class CredentialsLike(Protocol):
    """What the signer reads from ``S3Credentials`` (a frozen snapshot)."""

    @property
    def access_key(self) -> str: ...

    @property
    def secret_key(self) -> str: ...

    @property
    def token(self) -> str | None: ...


class StorePlace(Protocol):
    """Where a signer's requests go: what a workspace or transfer target tells."""

    @property
    def endpoint_url(self) -> str: ...

    @property
    def bucket(self) -> str: ...

    @property
    def region(self) -> str: ...

    @property
    def addressing_style(self) -> str: ...


def quote_key(key: str) -> str:
    """Percent-encode an S3 key for the URL path exactly as botocore does."""
    return quote(key, safe="/~")


def _q(value: str) -> str:
    return quote(value, safe="-_.~")


#: The last session token quoted, and its quoted form: one tuple, read and
#: written atomically. The token (about 600 characters, quoted character by
#: character) is the same for every URL one set of credentials signs, and
#: `sts-bridge run` signs a thousand one-key batches with it. Only the
#: current token is held, as the credentials themselves hold it.
_last_token: tuple[str, str] = ("", "")


def _quoted_token(token: str) -> str:
    global _last_token
    last = _last_token
    if last[0] != token:
        last = _last_token = (token, _q(token))
    return last[1]


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.digest(key, msg.encode("utf-8"), "sha256")


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return utc_now()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(timezone.utc)


class Signer:
    """SigV4 for one bucket on one endpoint with one credentials snapshot.

    Thread-safe for concurrent use (the only mutable state is a small cache
    of signing keys, written atomically under the GIL). Make a new signer
    when the credentials change.
    """

    def __init__(
        self,
        *,
        endpoint_url: str,
        bucket: str,
        region: str,
        credentials: CredentialsLike,
        addressing_style: str = "path",
        service: str = "s3",
    ) -> None:
        if addressing_style not in ("path", "virtual"):
            raise ValueError(
                f"addressing_style must be 'path' or 'virtual', not {addressing_style!r}"
            )
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint_url {endpoint_url!r} is not an http(s) URL")
        self.bucket = bucket
        self.region = region
        self.service = service
        self._access_key = credentials.access_key
        self._secret = credentials.secret_key
        self._token = credentials.token
        self._signed_token = " ".join(self._token.split()) if self._token is not None else ""
        netloc = parts.netloc
        endpoint_path = parts.path.rstrip("/")
        if addressing_style == "virtual":
            netloc = f"{bucket}.{netloc}"
            self._path_prefix = endpoint_path
        else:
            self._path_prefix = f"{endpoint_path}/{bucket}"
        self._base_url = f"{parts.scheme}://{netloc}"
        host = (parts.hostname or "").lower()
        if addressing_style == "virtual":
            host = f"{bucket.lower()}.{host}"
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
            host = f"{host}:{parts.port}"
        self.host = host
        self._signing_keys: dict[str, bytes] = {}
        self._stamp: tuple[int, str] = (-1, "")

    @classmethod
    def for_place(cls, place: StorePlace, credentials: CredentialsLike) -> Signer:
        """A signer of ``credentials`` for the endpoint, bucket, region and style of ``place``."""
        return cls(
            endpoint_url=place.endpoint_url,
            bucket=place.bucket,
            region=place.region,
            credentials=credentials,
            addressing_style=place.addressing_style,
        )

    @property
    def base_url(self) -> str:
        """``scheme://host[:port]`` the signed URLs start with (one HTTP pool serves them)."""
        return self._base_url

    def _timestamp(self, now: datetime | None) -> str:
        """``YYYYMMDDTHHMMSSZ`` of ``now`` (default: the clock), formatted once per second."""
        if now is not None:
            return _utc(now).strftime(_TIMESTAMP)
        second = int(time.time())
        stamp = self._stamp  # one tuple: read and written atomically
        if stamp[0] != second:
            stamp = self._stamp = (second, time.strftime(_TIMESTAMP, time.gmtime(second)))
        return stamp[1]

    # ------------------------------------------------------------ internals
    def _signing_key(self, date: str) -> bytes:
        key = self._signing_keys.get(date)
        if key is None:
            k = _hmac(f"AWS4{self._secret}".encode(), date)
            k = _hmac(k, self.region)
            k = _hmac(k, self.service)
            key = _hmac(k, "aws4_request")
            self._signing_keys = {date: key}  # one day at a time is enough
        return key

    def _scope(self, date: str) -> str:
        return f"{date}/{self.region}/{self.service}/aws4_request"

    def object_path(self, key: str) -> str:
        """The URL path (already encoded) of ``key``."""
        return f"{self._path_prefix}/{quote_key(key)}"

    def object_url(self, key: str) -> str:
        return self._base_url + self.object_path(key)

    # ------------------------------------------------------------- presign
    def presign(
        self, key: str, method: str = "GET", expires_in: int = 3600, *, now: datetime | None = None
    ) -> str:
        """One presigned URL for the full S3 ``key`` (see :meth:`presign_many`)."""
        return self.presign_many([key], method, expires_in, now=now)[0]

    def presign_many(
        self,
        keys: Iterable[str],
        method: str = "GET",
        expires_in: int = 3600,
        *,
        now: datetime | None = None,
    ) -> list[str]:
        """Presigned URLs for full S3 keys, all signed at the same instant ``now``.

        ``expires_in`` is whole seconds, 1 to 604800 (7 days).
        """
        method = method.upper()
        if method not in _METHODS:
            raise ValueError(f"method must be one of {sorted(_METHODS)}, not {method!r}")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int):
            raise TypeError("expires_in must be an int (seconds)")
        if not 1 <= expires_in <= MAX_EXPIRES:
            raise ValueError(f"expires_in must be between 1 and {MAX_EXPIRES} seconds")
        timestamp = _utc(now).strftime(_TIMESTAMP)
        date = timestamp[:8]
        scope = self._scope(date)
        signing_key = self._signing_key(date)
        credential = _q(f"{self._access_key}/{scope}")
        params = [
            ("X-Amz-Algorithm", _ALGORITHM),
            ("X-Amz-Credential", credential),
            ("X-Amz-Date", timestamp),
            ("X-Amz-Expires", str(expires_in)),
            ("X-Amz-SignedHeaders", "host"),
        ]
        if self._token is not None:
            params.append(("X-Amz-Security-Token", _quoted_token(self._token)))
        query = "&".join(f"{k}={v}" for k, v in params)
        canonical_query = "&".join(f"{k}={v}" for k, v in sorted(params))
        cr_head = f"{method}\n{self._path_prefix}/"
        cr_tail = f"\n{canonical_query}\nhost:{self.host}\n\nhost\n{UNSIGNED_PAYLOAD}"
        sts_head = f"{_ALGORITHM}\n{timestamp}\n{scope}\n"
        url_head = self._base_url + self._path_prefix + "/"
        url_mid = "?" + query + "&X-Amz-Signature="
        sha256 = hashlib.sha256
        digest = hmac.digest
        out: list[str] = []
        append = out.append
        for key in keys:
            qkey = quote(key, safe="/~")
            creq = sha256(f"{cr_head}{qkey}{cr_tail}".encode()).hexdigest()
            sig = digest(signing_key, (sts_head + creq).encode(), "sha256").hex()
            append(f"{url_head}{qkey}{url_mid}{sig}")
        return out

    # ------------------------------------------------------ header signing
    def sign_request(
        self,
        method: str,
        key: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        payload_sha256: str = EMPTY_SHA256,
        now: datetime | None = None,
    ) -> tuple[str, dict[str, str]]:
        """Sign a request on full S3 ``key`` with an ``Authorization`` header.

        Every header given is signed (so ``Content-MD5``, ``Content-Type``
        and ``x-amz-meta-*`` cannot be altered in transit). Returns the URL
        and the headers to send (``Host`` is left to the HTTP client, whose
        value is the same).
        """
        timestamp = self._timestamp(now)
        date = timestamp[:8]
        scope = self._scope(date)
        out: dict[str, str] = dict(headers or {})
        signed = {k.lower(): " ".join(str(v).split()) for k, v in out.items()}
        out["x-amz-date"] = signed["x-amz-date"] = timestamp
        out["x-amz-content-sha256"] = signed["x-amz-content-sha256"] = payload_sha256
        if self._token is not None:
            # signed as sent: a session token has no blanks to squeeze
            out["x-amz-security-token"] = self._token
            signed["x-amz-security-token"] = self._signed_token
        signed["host"] = self.host
        names = sorted(signed)
        canonical_headers = "".join(f"{n}:{signed[n]}\n" for n in names)
        signed_headers = ";".join(names)
        path = self.object_path(key)
        canonical_query = "&".join(
            f"{k}={v}" for k, v in sorted((_q(k), _q(v)) for k, v in (query or {}).items())
        )
        creq = "\n".join(
            [
                method.upper(),
                path,
                canonical_query,
                canonical_headers,
                signed_headers,
                payload_sha256,
            ]
        )
        string_to_sign = "\n".join(
            [_ALGORITHM, timestamp, scope, hashlib.sha256(creq.encode()).hexdigest()]
        )
        signature = hmac.digest(self._signing_key(date), string_to_sign.encode(), "sha256").hex()
        out["Authorization"] = (
            f"{_ALGORITHM} Credential={self._access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature}"
        )
        url = self._base_url + path + (f"?{canonical_query}" if canonical_query else "")
        return url, out
