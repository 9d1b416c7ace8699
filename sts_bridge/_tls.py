"""Why a TLS connection failed, in one redacted phrase (shared by the API and the store).

Both boundaries stop retrying at once when the answer is a certificate that
does not verify or a handshake that cannot succeed, and say which.
"""

from __future__ import annotations

from collections.abc import Iterator

from sts_bridge._redact import redact

__all__ = ["certificate_failure", "handshake_failure"]


def certificate_failure(exc: BaseException) -> str | None:
    """The certificate-verification reason inside ``exc`` (a urllib3 error, an
    ``OSError``), if that is the cause: a retry will not change it."""
    import ssl

    for current in _causes(exc):
        if isinstance(current, ssl.SSLCertVerificationError):
            return redact(current.verify_message or str(current))
        if isinstance(current, ssl.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(current):
            return redact(str(current))
    return None


def handshake_failure(exc: BaseException) -> str | None:
    """The reason of an ``ssl.SSLError`` inside ``exc`` that is not a certificate
    problem nor a broken connection (``https://`` on a plain-HTTP port, no
    common protocol): a retry will not change it either."""
    import ssl

    transient = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
    for current in _causes(exc):
        if isinstance(current, ssl.SSLError) and not isinstance(current, transient):
            return redact(str(current.reason or current))
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it: a urllib3 error's ``reason``, else ``__cause__``
    or ``__context__``, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)  # urllib3 errors: an exception or a str
        if not isinstance(reason, BaseException):
            reason = None
        current = reason or current.__cause__ or current.__context__
