"""Scrub secrets out of text before it reaches a log or an error message.

Two defences, because a pattern cannot know every format: patterns for
what has a shape (JWTs, AWS key ids, ``name=value`` and ``'Header': b'value'``
pairs), and the exact values sts-bridge has handled in this process
(:func:`remember_secret`: STS keys and session tokens, OAuth tokens, the
client secret), whatever their shape. radosgw access key ids, for one,
look like nothing in particular.

:class:`RedactingFilter` applies :func:`redact` to log records. The CLI puts
it on its log handler; :func:`guard_library_loggers` puts it on the
loggers of botocore, s3transfer and urllib3, whose DEBUG records carry
signed headers (``X-Amz-Security-Token``, ``Authorization: ...
Credential=<access key id>/...``), so that a program which turns DEBUG
logging on for everything still sees no secret.
"""

from __future__ import annotations

import collections
import functools
import logging
import re
import threading
from collections.abc import Callable

__all__ = ["RedactingFilter", "guard_library_loggers", "redact", "remember_secret"]

# Names of secrets (not secrets): the value after them is redacted.
_REDACTED_FIELDS = (
    r"access_token|refresh_token|id_token|client_secret|secret_key|secretaccesskey|"
    r"secret_access_key|aws_secret_access_key|aws_session_token|aws_access_key_id|"
    r"accesskeyid|access_key_id|access_key|sessiontoken|session_token|token|password|"
    r"x-amz-security-token|x-amz-signature|x-amz-credential|authorization|credential"
)


@functools.cache
def _patterns() -> tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...]:
    """The shapes of secrets and how each is masked, compiled on first use
    (a command that logs nothing never pays for the compiling)."""
    # ``Authorization: AWS4-HMAC-SHA256 Credential=...`` and ``Bearer x``: the
    # scheme word is followed by the secret, so the whole rest of the value goes.
    schemed = re.compile(
        r"(?i)((?:authorization)[\"']?\s*[:=]\s*b?[\"']?)((?:bearer|basic|aws4-hmac-sha256)\s+)?"
        r"([^\"'\r\n}]+)"
    )
    pair = re.compile(rf"(?i)((?:{_REDACTED_FIELDS})[\"']?\s*[:=]\s*b?[\"']?)([^\s\"'&,}}]+)")
    return (
        # JWTs (three base64url parts) and AWS access key ids: the whole match
        (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), lambda m: "***"),
        (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b"), lambda m: "***"),
        (schemed, lambda m: m.group(1) + (m.group(2) or "") + "***"),
        # key=value and 'Key': b'value' pairs, and a bearer token anywhere
        (pair, lambda m: m.group(1) + "***"),
        (re.compile(r"(?i)(bearer\s+)([A-Za-z0-9._~+/=-]+)"), lambda m: m.group(1) + "***"),
        # the userinfo of a URL (``http://user:password@host``): all of it goes
        (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"]+@"), lambda m: m.group(1) + "***@"),
    )


# Values shorter than this are not remembered: they would redact ordinary words.
_MIN_SECRET_LENGTH = 8
_KNOWN: collections.deque[str] = collections.deque(maxlen=256)
_KNOWN_LOCK = threading.Lock()


def remember_secret(*values: str | None) -> None:
    """Redact these exact values from now on, wherever they appear.

    Called where sts-bridge first holds a secret (credentials snapshots,
    tokens, settings). The newest 256 values are kept, which covers every
    credential a long job still uses.
    """
    with _KNOWN_LOCK:
        for value in values:
            if value and len(value) >= _MIN_SECRET_LENGTH and value not in _KNOWN:
                _KNOWN.append(value)


def redact(text: str) -> str:
    """Return ``text`` with tokens, keys and secrets replaced by ``***``."""
    with _KNOWN_LOCK:
        known = sorted(_KNOWN, key=len, reverse=True)  # longest first: no partial leftovers
    for value in known:
        if value in text:
            text = text.replace(value, "***")
    for pattern, mask in _patterns():
        text = pattern.sub(mask, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's message through :func:`redact`.

    The message is formatted once (``msg % args``) and stored back, so that
    no handler sees the raw arguments; exception text is redacted too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: logging reports it itself
            return True
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


#: Libraries whose DEBUG records carry signed request headers or URLs.
LIBRARY_LOGGERS = (
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "authlib",
    "requests_oauthlib",
    "fsspec",
    "s3fs",
    "aiobotocore",
)

_FILTER = RedactingFilter()
_GUARD_LOCK = threading.Lock()


def guard_library_loggers() -> None:
    """Put :class:`RedactingFilter` on every logger of :data:`LIBRARY_LOGGERS`.

    A logger's filters only see the records logged on that very logger,
    not its children's, so every existing child logger gets the filter as
    well; call it again once more libraries are imported (it is cheap and
    idempotent).
    """
    with _GUARD_LOCK:
        names = set(LIBRARY_LOGGERS)
        for name in list(logging.root.manager.loggerDict):
            if name.split(".", 1)[0] in LIBRARY_LOGGERS:
                names.add(name)
        for name in names:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
