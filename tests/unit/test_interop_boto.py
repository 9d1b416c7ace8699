"""The boto3 hook: DeferredRefreshableCredentials over RefreshingS3Credentials."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone

import pytest

from sts_bridge.credentials.refreshing import RefreshingS3Credentials, S3Credentials
from sts_bridge.errors import ConfigurationError
from sts_bridge.interop.boto import (
    StsBridgeCredentials,
    boto3_session,
    botocore_credentials,
    s3_client,
    set_refresh_windows,
)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Fetcher:
    def __init__(self, lifetime: float = 900) -> None:
        self.calls = 0
        self.lifetime = lifetime

    def __call__(self) -> S3Credentials:
        self.calls += 1
        now = _now()
        return S3Credentials(
            f"AK{self.calls}", "s", "t", now + timedelta(seconds=self.lifetime), now
        )


def test_set_windows_private_attributes_still_drive_botocore() -> None:
    """Guards the one private-attribute use: botocore must honour the instance windows."""
    creds = StsBridgeCredentials(refresh_using=lambda: {}, method="x")
    set_refresh_windows(creds, 42.0, 21.0)
    assert creds._advisory_refresh_timeout == 42.0
    assert creds._mandatory_refresh_timeout == 21.0
    creds._expiry_time = _now() + timedelta(seconds=30)
    creds._frozen_credentials = object()
    assert creds.refresh_needed()  # 30 s left < 42 s advisory
    assert not creds.refresh_needed(creds._mandatory_refresh_timeout)  # 30 > 21


def test_nothing_is_fetched_until_first_use_then_botocore_refreshes_through_us() -> None:
    fetcher = Fetcher()
    refreshing = RefreshingS3Credentials(fetcher)
    bc = botocore_credentials(refreshing)
    assert fetcher.calls == 0
    assert bc.get_frozen_credentials().access_key == "AK1"
    assert bc.get_frozen_credentials().access_key == "AK1"
    assert fetcher.calls == 1
    assert bc._advisory_refresh_timeout == 120 * 0.9


def test_botocore_refreshes_when_our_credentials_are_in_the_window() -> None:
    now = _now()
    stale = S3Credentials(
        "OLD", "s", "t", now + timedelta(seconds=20), now - timedelta(seconds=880)
    )
    fetcher = Fetcher()
    refreshing = RefreshingS3Credentials(fetcher, initial=stale)
    bc = botocore_credentials(refreshing)
    assert bc.get_frozen_credentials().access_key == "AK1"  # 20 s left < 60 s mandatory


def test_short_lived_credentials_scale_botocore_windows() -> None:
    fetcher = Fetcher(lifetime=6)
    bc = botocore_credentials(RefreshingS3Credentials(fetcher))
    bc.get_frozen_credentials()
    assert abs(bc._advisory_refresh_timeout - 6 / 3 * 0.9) < 1e-6
    assert abs(bc._mandatory_refresh_timeout - 6 / 6 * 0.9) < 1e-6


def test_s3_client_configuration() -> None:
    fetcher = Fetcher()
    client = s3_client(
        RefreshingS3Credentials(fetcher),
        endpoint_url="http://127.0.0.1:9",
        region="eu-central-1",
        addressing_style="path",
        verify=False,
    )
    config = client.meta.config
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.region_name == "eu-central-1"
    assert config.s3["addressing_style"] == "path"
    assert config.signature_version == "s3v4"
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.max_pool_connections == 16
    assert config.retries["mode"] == "standard"
    assert fetcher.calls == 0  # client creation fetches nothing
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
    assert "AK1" in url and fetcher.calls == 1


def test_boto3_session_uses_our_credentials() -> None:
    session = boto3_session(RefreshingS3Credentials(Fetcher()), region="us-east-1")
    creds = session.get_credentials()
    assert creds is not None and creds.method == "sts-bridge"
    assert creds.get_frozen_credentials().access_key == "AK1"


def test_without_boto3_the_client_is_botocore_s_and_a_session_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """boto3 is the ``boto3`` extra: the core works with botocore alone."""
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 -> ImportError
    fetcher = Fetcher()
    client = s3_client(
        RefreshingS3Credentials(fetcher), endpoint_url="http://127.0.0.1:9", region="us-east-1"
    )
    assert not hasattr(client, "upload_file")  # boto3's injected transfer methods
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
    assert "AK1" in url
    with pytest.raises(ConfigurationError, match="boto3") as err:
        boto3_session(RefreshingS3Credentials(Fetcher()))
    assert err.value.hint is not None and "sts-bridge[boto3]" in err.value.hint


def test_with_boto3_the_client_has_its_transfer_methods() -> None:
    client = s3_client(
        RefreshingS3Credentials(Fetcher()), endpoint_url="http://127.0.0.1:9", region="us-east-1"
    )
    assert hasattr(client, "upload_file") and hasattr(client, "download_file")
