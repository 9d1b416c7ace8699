"""polars_options: where the store is, a provider that tells polars an expiry
a little before the real one, never in the past, and a warning when polars
would not trust the workspace's CA bundle."""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sts_bridge.credentials.refreshing import S3Credentials
from sts_bridge.interop.tool_credentials import PolarsCaWarning, polars_options


@dataclass
class FakeWorkspace:
    endpoint_url: str = "http://127.0.0.1:9000"
    region: str = "eu-1"
    addressing_style: str = "path"
    verify: bool | str = True
    lifetimes: list[float] = field(default_factory=lambda: [900.0])
    asked: int = 0

    def credentials(self) -> S3Credentials:
        left = self.lifetimes[min(self.asked, len(self.lifetimes) - 1)]
        self.asked += 1
        expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=left)
        return S3Credentials(f"AK{self.asked}", "SK", "TOKEN", expiry)


def test_storage_options_say_where_the_store_is() -> None:
    options = polars_options(FakeWorkspace())  # type: ignore[arg-type]
    assert options["storage_options"] == {
        "aws_endpoint_url": "http://127.0.0.1:9000",
        "aws_region": "eu-1",
        "aws_virtual_hosted_style_request": "false",
        "aws_allow_http": "true",
    }
    https = polars_options(FakeWorkspace(endpoint_url="https://s3.example", verify=False))  # type: ignore[arg-type]
    assert "aws_allow_http" not in https["storage_options"]
    assert https["storage_options"]["allow_invalid_certificates"] == "true"


def test_the_provider_asks_the_workspace_every_time_and_tells_an_early_expiry() -> None:
    ws = FakeWorkspace(lifetimes=[900.0, 8.0, 0.0])
    provide = polars_options(ws)["credential_provider"]  # type: ignore[arg-type]
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    keys, told = provide()
    assert keys == {
        "aws_access_key_id": "AK1",
        "aws_secret_access_key": "SK",
        "aws_session_token": "TOKEN",
    }
    assert now + 900 - 61 <= told <= now + 900 - 59  # 60 s early at most
    keys, told = provide()
    assert keys["aws_access_key_id"] == "AK2"  # asked again: never a snapshot
    assert now + 8 - 3 <= told <= now + 8  # a quarter of what is left, when less
    _, told = provide()
    assert told >= int(now) - 1  # never far in the past


def test_a_ca_bundle_polars_would_not_trust_is_said_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "private-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    ws = FakeWorkspace(endpoint_url="https://s3.example", verify=str(bundle))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.warns(PolarsCaWarning, match="SSL_CERT_FILE") as seen:
        options = polars_options(ws)  # type: ignore[arg-type]
    assert str(bundle) in str(seen[0].message)
    assert "allow_invalid_certificates" not in options["storage_options"]
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "other.pem"))
    with pytest.warns(PolarsCaWarning):
        polars_options(ws)  # type: ignore[arg-type]
    # SSL_CERT_FILE names the bundle (by another path too): polars trusts it, nothing said
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "." / "private-ca.pem"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        polars_options(ws)  # type: ignore[arg-type]
        polars_options(FakeWorkspace(verify=True))  # type: ignore[arg-type]
