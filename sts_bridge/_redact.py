"""Scrub secrets out of text before it reaches a log or an error message."""

from __future__ import annotations

import re

# JWTs (three base64url parts), AWS access keys, and key=value secrets.
_PATTERNS = (
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b"),
    re.compile(
        r"(?i)((?:access_token|refresh_token|id_token|client_secret|secret_key|"
        r"secretaccesskey|sessiontoken|session_token|token|password|x-amz-security-token|"
        r"x-amz-signature|authorization)[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,}]+)"
    ),
    re.compile(r"(?i)(bearer\s+)([A-Za-z0-9._~+/=-]+)"),
)


def redact(text: str) -> str:
    """Return ``text`` with tokens, keys and secrets replaced by ``***``."""
    text = _PATTERNS[0].sub("***", text)
    text = _PATTERNS[1].sub("***", text)
    text = _PATTERNS[2].sub(lambda m: m.group(1) + "***", text)
    text = _PATTERNS[3].sub(lambda m: m.group(1) + "***", text)
    return text
