"""sts_bridge.s3.errors: what the store answers -> the StorageError branch."""

from __future__ import annotations

import datetime as dt

import pytest

from sts_bridge.cli._app import ExitStatus, exit_status_for
from sts_bridge.errors import (
    ApiError,
    CredentialsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageAccessDeniedError,
    StorageError,
    StorageUnavailableError,
    StsBridgeError,
    TransferError,
)
from sts_bridge.s3.errors import (
    botocore_error_values,
    map_botocore_error,
    map_s3_error,
    storage_unreachable,
)

PREFIX = "gep-alice-ws/"
KEY = "results/run-1/out.tif"
WHAT = f"downloading {KEY!r}"


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, ObjectNotFoundError),
        ("", 404, ObjectNotFoundError),  # a HEAD's 404 has no body
        ("NoSuchUpload", 404, ObjectNotFoundError),
        ("NoSuchBucket", 404, ObjectNotFoundError),
        ("AccessDenied", 403, StorageAccessDeniedError),
        ("", 403, StorageAccessDeniedError),
        ("PreconditionFailed", 412, PreconditionFailedError),
        ("", 412, PreconditionFailedError),
        ("SlowDown", 503, StorageUnavailableError),
        ("SlowDown", None, StorageUnavailableError),
        ("InternalError", 500, StorageUnavailableError),
        ("", 502, StorageUnavailableError),
        ("", 429, StorageUnavailableError),
        ("XAmzContentSHA256Mismatch", 400, StorageError),
        ("InvalidArgument", 400, StorageError),
    ],
)
def test_each_code_and_status_maps_to_its_class(
    code: str, status: int | None, expected: type[StorageError]
) -> None:
    err = map_s3_error(code, status, WHAT, key=KEY)
    assert type(err) is expected
    assert isinstance(err, StorageError)
    assert not isinstance(err, (ApiError, TransferError))  # `except ApiError` misses it
    assert isinstance(err, StorageError) and err.status == status and err.code == code
    assert err.key == KEY
    assert err.hint  # every class brings a next step ...
    assert str(err).endswith(f"({err.hint})")  # ... that is part of the message


def test_any_other_refusal_is_a_plain_storage_error_with_exit_8() -> None:
    err = map_s3_error("InvalidArgument", 400, WHAT, key=KEY)
    assert type(err) is StorageError and "--debug" in (err.hint or "")
    assert "InvalidArgument, HTTP 400" in err.message
    assert exit_status_for(err) == ExitStatus.STORAGE


def test_messages_name_the_users_key_not_the_prefixed_one() -> None:
    for code, status in [("NoSuchKey", 404), ("AccessDenied", 403), ("SlowDown", 503)]:
        err = map_s3_error(code, status, WHAT, key=KEY)
        assert KEY in str(err) and PREFIX not in str(err)
    missing = map_s3_error("NoSuchKey", 404, WHAT, key=KEY)
    assert missing.message == f"{WHAT} failed: no object {KEY!r}"
    assert "HTTP 503" in map_s3_error("SlowDown", 503, WHAT, key=KEY).message
    assert "no error code, HTTP 403" in map_s3_error("", 403, WHAT, key=KEY).message


@pytest.mark.parametrize("code", ["ExpiredToken", "InvalidToken", "TokenRefreshRequired"])
def test_expired_credential_codes_are_credentials_errors(code: str) -> None:
    err = map_s3_error(code, 400, WHAT, key=KEY)
    assert type(err) is CredentialsError and "expired" in (err.hint or "")


def test_access_denied_after_the_signing_credentials_expired_says_they_expired() -> None:
    now = dt.datetime.now(dt.timezone.utc)
    expired = map_s3_error("AccessDenied", 403, WHAT, signed_until=now - dt.timedelta(seconds=1))
    assert type(expired) is CredentialsError and "had expired" in expired.message
    fresh = map_s3_error("AccessDenied", 403, WHAT, signed_until=now + dt.timedelta(minutes=5))
    assert type(fresh) is StorageAccessDeniedError


def test_storage_unreachable_keeps_the_reason_and_a_hint() -> None:
    err = storage_unreachable(WHAT, "no progress for 25 s (the storage endpoint stalled)", key=KEY)
    assert type(err) is StorageUnavailableError and err.status is None
    assert "stalled" in err.message and err.hint and "network" in err.hint
    assert exit_status_for(err) == ExitStatus.STORAGE


def test_botocore_client_errors_go_through_the_same_mapper() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    missing = ClientError(
        {
            "Error": {"Code": "404", "Message": "Not Found"},
            "ResponseMetadata": {"HTTPStatusCode": 404},
        },
        "HeadObject",
    )
    assert botocore_error_values(missing) == ("404", 404)
    err = map_botocore_error(missing, f"deleting {KEY!r}", key=KEY)
    assert type(err) is ObjectNotFoundError and err.key == KEY
    denied = ClientError(
        {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        "ListObjectsV2",
    )
    assert type(map_botocore_error(denied, "listing 'a/'")) is StorageAccessDeniedError
    down = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    assert botocore_error_values(down) == ("", None)
    assert type(map_botocore_error(down, "listing 'a/'")) is StorageUnavailableError


def test_our_own_errors_pass_through_the_botocore_mapper_unchanged() -> None:
    own = CredentialsError("the STS call failed")
    assert map_botocore_error(own, "listing 'a/'") is own
    other = map_botocore_error(RuntimeError("boom"), "listing 'a/'")
    assert type(other) is StorageError and "RuntimeError" in other.message


@pytest.mark.parametrize(
    ("err", "status"),
    [
        (ObjectNotFoundError("x"), ExitStatus.NOT_FOUND),
        (StorageAccessDeniedError("x"), ExitStatus.FORBIDDEN),
        (PreconditionFailedError("x"), ExitStatus.STORAGE),
        (StorageUnavailableError("x"), ExitStatus.STORAGE),
        (TransferError("x"), ExitStatus.ERROR),
    ],
)
def test_cli_exit_codes_of_the_storage_branch(err: StsBridgeError, status: ExitStatus) -> None:
    assert exit_status_for(err) == status
