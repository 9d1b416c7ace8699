"""The one clock and the one vocabulary of credential state (tokens and S3 credentials).

Every expiry decision in sts_bridge reads "now" through a :data:`Clock`
(default :func:`utc_now`), which tests replace. Access tokens and S3
credentials share google-auth's three states, computed by
:func:`credential_state` from an expiry and two windows:

* ``FRESH``: usable, no refresh needed;
* ``STALE``: inside the advisory window: still usable, refresh soon (one
  thread tries, a failure keeps the current value);
* ``INVALID``: inside the mandatory window, expired or absent: must be
  refreshed before use.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import datetime, timezone

__all__ = ["Clock", "CredentialState", "credential_state", "utc_now"]

#: Returns "now" as a timezone-aware datetime.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default clock: now, timezone-aware UTC."""
    return datetime.now(timezone.utc)


class CredentialState(str, enum.Enum):
    """Whether a token or a set of S3 credentials may be used (google-auth's ``TokenState``).

    The members compare equal to their lower-case names (``"fresh"``, ...).
    """

    FRESH = "fresh"
    STALE = "stale"
    INVALID = "invalid"

    def __str__(self) -> str:
        return self.value


def credential_state(
    expiry: datetime | None, now: datetime, *, advisory: float, mandatory: float
) -> CredentialState:
    """The state of something expiring at ``expiry`` (``None``: never) at ``now``.

    ``INVALID`` when it lives less than ``mandatory`` more seconds, ``STALE``
    when less than ``advisory``, else ``FRESH``. Raises ``ValueError`` when
    ``advisory < mandatory``.
    """
    if advisory < mandatory:
        raise ValueError("need advisory >= mandatory")
    if expiry is None:
        return CredentialState.FRESH
    remaining = (expiry - now).total_seconds()
    if remaining < mandatory:
        return CredentialState.INVALID
    if remaining < advisory:
        return CredentialState.STALE
    return CredentialState.FRESH
