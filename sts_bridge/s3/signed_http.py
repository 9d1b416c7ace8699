"""The signed HTTP client of a transfer: SigV4 requests over one connection pool.

Every request of an upload or a download (data and control plane) goes
through :class:`S3Http`, signed with :class:`~sts_bridge.s3.signer.Signer`
from a fresh ``credentials()`` snapshot (a transfer may outlive one set of
STS credentials) and sent over one urllib3 connection pool
(:mod:`sts_bridge.s3.transport`); no boto3 client is built. Also here: the
few regular expressions that read S3's small XML answers; a refused request
is mapped by :func:`sts_bridge.s3.errors.map_s3_error`.
See :mod:`sts_bridge.s3.transfers` for why not s3transfer.
"""

from __future__ import annotations

import builtins
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from sts_bridge.errors import StorageUnavailableError
from sts_bridge.retry import S3_RETRY, RetryPolicy
from sts_bridge.s3.config import TransferConfig
from sts_bridge.s3.errors import (
    UNAVAILABLE_HINT,
    map_s3_error,
    storage_unreachable,
    tls_refused,
)
from sts_bridge.s3.signer import EMPTY_SHA256, CredentialsLike, Signer, StorePlace
from sts_bridge.s3.transport import (
    ANSWER_LIMIT,
    Answer,
    BodyPieces,
    ConnectFailed,
    ConnectionPools,
    FileRange,
    PoolClosed,
    StoreConnection,
    sha256_of,
)

# The engine logs under the public module's name.
log = logging.getLogger("sts_bridge.s3.transfers")

MiB = 1024 * 1024
#: S3 error codes meaning "these credentials are bad" rather than "not allowed":
#: the cached set is dropped, a new one fetched and the request retried once.
REFUSED_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AccessDenied"}
)
_OK = frozenset({200})
#: Most bytes of an error answer read (S3's are a few hundred bytes of XML).
_ERROR_ANSWER_LIMIT = 1 * MiB


def credentials_refused(code: str, status: int | None) -> bool:
    """Whether an S3 error says the credentials themselves are bad (see
    :data:`REFUSED_CREDENTIAL_CODES`; a 403 without a body, as HEAD gets, too)."""
    return code in REFUSED_CREDENTIAL_CODES or (status == 403 and not code)


def strip_etag(etag: str | None) -> str:
    return (etag or "").strip().strip('"')


def xml_text(data: bytes | None, tag: str) -> str:
    """The text of the first ``<tag>`` in a small S3 XML answer ("" when absent)."""
    match = re.search(rb"<" + tag.encode() + rb">([^<]*)</", data or b"")
    if not match:
        return ""
    text = match.group(1).decode("utf-8", "replace")
    if "&" in text:
        import html

        text = html.unescape(text)
    return text


def xml_blocks(data: bytes | None, tag: str) -> builtins.list[bytes]:
    """The inner XML of every ``<tag>...</tag>`` (not nested in itself) of an S3 answer."""
    t = re.escape(tag.encode())
    return re.findall(rb"<" + t + rb">(.*?)</" + t + rb">", data or b"", re.DOTALL)


class BucketTarget(StorePlace, Protocol):
    """What the engine needs to know about where it sends requests.

    The callers confine keys before they reach the engine
    (:mod:`sts_bridge.s3.keys`); ``prefix`` names them back to the user.
    """

    @property
    def prefix(self) -> str: ...

    @property
    def verify(self) -> bool | str: ...

    def credentials(self) -> CredentialsLike: ...


class S3Http:
    """The data plane of one transfer: signed requests over one connection pool.

    Every request (data and control plane: PUT, UploadPart, create /
    complete / abort multipart, ListMultipartUploads, ListParts, HEAD,
    ranged GETs) is signed with :class:`~sts_bridge.s3.signer.Signer` from a
    fresh ``credentials()`` snapshot, so a transfer longer than one
    credentials lifetime keeps working, and no boto3 client is built.

    ``pools``: borrow the connection pool from there and leave it open
    (many transfers in one process); otherwise this transfer opens its own
    and :meth:`close` closes it.
    """

    def __init__(
        self,
        ws: BucketTarget,
        config: TransferConfig,
        *,
        connections: int,
        retry: RetryPolicy = S3_RETRY,
        pools: ConnectionPools | None = None,
    ) -> None:
        self.ws = ws
        self.config = config
        self.retry = retry
        # Connections kept in the pool: the most requests the engine has in flight.
        self.connections = max(1, connections)
        # The stall timeout bounds every socket operation, sends of one block
        # included: a request that moves nothing for `stall` seconds fails
        # and is retried.
        self.stall = config.stall_timeout
        self._signer_lock = threading.Lock()
        self._signer: tuple[CredentialsLike, Signer] | None = None
        # One connection pool for the one host every request of the engine
        # goes to (made with the first signer, which knows the URL).
        self.http: StoreConnection | None = None
        self._base_len = 0
        self._pools = pools

    def _make_pool(self, base_url: str) -> StoreConnection:
        self._base_len = len(base_url)
        settings: dict[str, Any] = {
            "maxsize": self.connections + 1,
            "stall_timeout": self.stall,
            "verify": self.ws.verify,
        }
        if self._pools is not None:
            return self._pools.get(base_url, **settings)
        return StoreConnection(base_url, **settings)

    def close(self) -> None:
        """Close this client's own pool; used again, it connects anew (a pool
        borrowed from ``pools`` is theirs to close)."""
        with self._signer_lock:
            http, self.http = self.http, None
        if http is not None and self._pools is None:
            http.close()

    def _connection(self, base_url: str) -> StoreConnection:
        """The pool to send through now: made on first use, and made again once
        it was closed (:meth:`close` here, or the borrowed pools' own close, on
        another thread), so that a call overlapping a close completes on fresh
        connections instead of failing on closed ones."""
        http = self.http
        if http is None or http.closed:
            with self._signer_lock:
                http = self.http
                if http is None or http.closed:
                    http = self.http = self._make_pool(base_url)
        return http

    # ---------------------------------------------------------- plumbing
    def signer(self) -> Signer:
        return self.signer_and_credentials()[0]

    def signer_and_credentials(self) -> tuple[Signer, CredentialsLike]:
        creds = self.ws.credentials()
        current = self._signer  # a cheap read: same snapshot, same signer
        if current is not None and current[0] is creds:
            return current[1], creds
        with self._signer_lock:
            if self._signer is None or self._signer[0] is not creds:
                signer = Signer.for_place(self.ws, creds)
                self._signer = (creds, signer)
            return self._signer[1], self._signer[0]

    def call(
        self,
        method: str,
        full_key: str,
        what: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | FileRange | BodyPieces | None = None,
        payload_sha256: str | None = None,
        ok: frozenset[int] = _OK,
        stream: bool = False,
        answer_limit: int | None = ANSWER_LIMIT,
    ) -> Any:
        """One signed request, retrying transient failures; returns the
        :class:`~sts_bridge.s3.transport.Answer`.

        Signed with fresh credentials on every attempt. The body is covered
        by ``x-amz-content-sha256`` (computed here unless given; a
        :class:`~sts_bridge.s3.transport.FileRange` body needs it given). With
        ``stream=True`` the body of an ``ok`` response is left unread (the
        caller reads it and releases the connection); otherwise it is read
        whole (``data``), at most ``answer_limit`` bytes (``None``: no limit),
        and a body that breaks off is retried like a failed request. Any other status
        raises (mapped by :func:`~sts_bridge.s3.errors.map_s3_error`);
        a store that never answers raises
        :class:`~sts_bridge.errors.StorageUnavailableError` after the retries.
        """
        if payload_sha256 is None:
            if isinstance(body, FileRange):
                raise ValueError("a FileRange body is signed with its SHA-256, given by the caller")
            payload_sha256 = sha256_of(body).hexdigest() if body else EMPTY_SHA256
        last = ""
        replaced = False
        reopened = False
        stalled = 0  # writes in a row that got no answer at all
        reads_answered: bool | None = None  # asked once: after WRITE_STALLS_BEFORE_FULL
        attempt = 0
        while self.retry.may_retry(attempt):
            if attempt:
                time.sleep(self.retry.delay(attempt - 1))
            attempt += 1
            signer, creds = self.signer_and_credentials()
            url, signed = signer.sign_request(
                method, full_key, query=query, headers=headers, payload_sha256=payload_sha256
            )
            signed["Host"] = signer.host  # the value signed, whatever the route (a proxy)
            http = self._connection(signer.base_url)
            resp: Answer | None = None
            try:
                resp = http.request(
                    method,
                    url[self._base_len :],  # the pool knows scheme, host and port
                    body=body,
                    headers=signed,
                )
                if resp.status in ok and not stream:
                    resp.read(answer_limit)  # whole, so the connection goes back
                    resp.release_conn()
            except PoolClosed:
                # Closed on another thread before this request took a connection:
                # nothing was sent; the next pass takes a fresh pool (the first
                # time not counted as an attempt: nothing failed).
                last = "the connections were closed meanwhile"
                if not reopened:
                    reopened = True
                    attempt -= 1
                continue
            except OSError as exc:
                if resp is not None:
                    resp.close()
                    resp.release_conn()
                refused = tls_refused(what, self.ws.endpoint_url, exc)
                if refused is not None:
                    raise refused from exc  # the next attempt would fail the same way
                last = describe_failure(exc, self.stall)
                stalled = stalled + 1 if method in _WRITES and isinstance(exc, TimeoutError) else 0
                log.debug("%s %s attempt %d failed: %s", method, full_key, attempt, last)
                if stalled == WRITE_STALLS_BEFORE_FULL and self.retry.may_retry(attempt):
                    # radosgw with a full store holds every write without an
                    # answer and still answers reads: said now, not after
                    # every attempt; a write that stalls once is retried
                    reads_answered = self._answers_reads(full_key)
                    if reads_answered:
                        raise self._refusing_writes(what, last, stalled, full_key) from exc
                continue
            stalled = 0
            if resp.status in ok:
                return resp
            try:
                data = resp.read(_ERROR_ANSWER_LIMIT) if method != "HEAD" else b""
            except OSError as exc:
                data = b""  # the status is the answer; the connection is not reused
                log.debug("%s %s: the error answer broke off: %s", method, full_key, exc)
            resp.release_conn()
            code = xml_text(data, "Code")
            last = f"HTTP {resp.status} {code}".strip()
            if self.retry.transient(resp.status, code):
                continue
            replace = getattr(self.ws, "credentials_refused", None)
            if not replaced and replace is not None and credentials_refused(code, resp.status):
                # Dropped, fetched once, retried once (no backoff: nothing is overloaded).
                replaced = True
                log.info(
                    "%s: the store refused the credentials (%s); fetching new ones", what, last
                )
                replace(creds)
                attempt -= 1
                continue
            raise map_s3_error(
                code,
                resp.status,
                what,
                key=self.user_key(full_key),
                signed_until=getattr(creds, "expiry", None),
            )
        if stalled and reads_answered is None and self._answers_reads(full_key):
            raise self._refusing_writes(what, last, stalled, full_key)
        raise storage_unreachable(
            what,
            f"{last} (after {self.retry.attempts} attempts)",
            key=self.user_key(full_key),
            hint=UNAVAILABLE_HINT + " (an interrupted upload resumes)",
        )

    def _refusing_writes(
        self, what: str, last: str, stalled: int, full_key: str
    ) -> StorageUnavailableError:
        """The error of writes that stall while the store answers reads."""
        return StorageUnavailableError(
            f"{what} failed: {last} on {stalled} attempts in a row, while it answers "
            "reads: the store is probably full or refusing writes",
            key=self.user_key(full_key),
            hint="the store cannot take data now: tell its operators, or try again "
            "later (an interrupted upload resumes)",
        )

    def _answers_reads(self, full_key: str) -> bool:
        """Whether the store answers a read (HEAD of the key) within the stall timeout."""
        signer, _ = self.signer_and_credentials()
        url, signed = signer.sign_request("HEAD", full_key, payload_sha256=EMPTY_SHA256)
        signed["Host"] = signer.host
        http = self._connection(signer.base_url)
        try:
            resp = http.request("HEAD", url[self._base_len :], headers=signed)
        except OSError:
            return False
        resp.release_conn()
        return True  # any status: 200, 404 and 403 are answers

    def put(
        self,
        full_key: str,
        body: bytes | FileRange | BodyPieces,
        sha256_hex: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """PUT ``body`` (signed payload), retrying transient failures; returns the ETag."""
        resp = self.call(
            "PUT",
            full_key,
            f"uploading {self.user_key(full_key)!r}",
            query=query,
            headers=headers,
            body=body,
            payload_sha256=sha256_hex,
        )
        return strip_etag(resp.headers.get("ETag"))

    def user_key(self, full_key: str) -> str:
        """``full_key`` as the user names it: without the workspace prefix."""
        prefix = str(getattr(self.ws, "prefix", "") or "")  # not part of BucketTarget
        return full_key[len(prefix) :] if prefix and full_key.startswith(prefix) else full_key

    def head_etag(self, full_key: str) -> str:
        resp = self.call("HEAD", full_key, f"checking {self.user_key(full_key)!r}")
        return strip_etag(resp.headers.get("ETag"))


#: Methods that write: a full store holds them without an answer.
_WRITES = frozenset({"PUT", "POST", "DELETE"})
#: Writes stalled in a row, while the store answers reads, that mean it refuses
#: writes (full): one stall is retried (a connection that hung), two are not.
WRITE_STALLS_BEFORE_FULL = 2


def describe_failure(exc: BaseException, stall: float) -> str:
    """A short, secret-free reason for a failed request to the store."""
    if isinstance(exc, ConnectFailed):
        return "cannot connect to the storage endpoint"
    if isinstance(exc, TimeoutError):
        return f"no progress for {stall:g} s (the storage endpoint stalled)"
    if isinstance(exc, ConnectionError):  # ProtocolError too: the answer broke off
        return "the connection to the storage endpoint broke"
    return type(exc).__name__
