"""sts_bridge.clock: one "now" and one credential state for tokens and S3 credentials."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sts_bridge.clock import CredentialState, credential_state, utc_now

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_utc_now_is_timezone_aware_utc() -> None:
    now = utc_now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("left", "state"),
    [
        (121.0, CredentialState.FRESH),
        (120.0, CredentialState.FRESH),
        (119.0, CredentialState.STALE),
        (60.0, CredentialState.STALE),
        (59.0, CredentialState.INVALID),
        (-5.0, CredentialState.INVALID),
    ],
)
def test_state_from_the_two_windows(left: float, state: CredentialState) -> None:
    expiry = T0 + timedelta(seconds=left)
    assert credential_state(expiry, T0, advisory=120, mandatory=60) is state


def test_no_expiry_is_fresh_and_equal_windows_skip_stale() -> None:
    assert credential_state(None, T0, advisory=120, mandatory=60) is CredentialState.FRESH
    expiry = T0 + timedelta(seconds=30)
    assert credential_state(expiry, T0, advisory=60, mandatory=60) is CredentialState.INVALID
    assert credential_state(expiry, T0, advisory=10, mandatory=10) is CredentialState.FRESH


def test_windows_in_the_wrong_order_are_refused() -> None:
    with pytest.raises(ValueError, match="advisory >= mandatory"):
        credential_state(T0, T0, advisory=10, mandatory=60)


def test_states_compare_equal_to_their_names() -> None:
    assert CredentialState.STALE == "stale" and str(CredentialState.INVALID) == "invalid"
