"""What the light CLI commands import (issue 19: every command pays its imports).

A warm ``presign`` (and ``run`` of presigns) signs URLs offline: it needs the
signer, never the upload or download engines, the signed HTTP client or
urllib3. A ``download`` needs the download engine, never the upload one.
Each case runs in a fresh interpreter: the import state of this one is
shared by every test.
"""

from __future__ import annotations

import json
import subprocess
import sys

_PRESIGN = """
import json, sys
from types import SimpleNamespace

import sts_bridge, sts_bridge.client, sts_bridge.workspace
from sts_bridge.cli import _app, run_command, transfer_commands
from sts_bridge.s3.transfers import TransferEngine

creds = SimpleNamespace(access_key="AK", secret_key="SK", token=None, expiry=None)
target = SimpleNamespace(
    name="ws", bucket="bkt", prefix="a2s/", endpoint_url="http://127.0.0.1:9",
    region="us-east-1", addressing_style="path", verify=True,
    credentials_for=lambda min_lifetime: creds,
)
engine = TransferEngine(target)
engine.reuse_connections(4)  # as `sts-bridge run` does
url = engine.presign("k", expires_in=60).url
engine.close()
assert url.startswith("http://127.0.0.1:9/bkt/a2s/k?"), url
print(json.dumps(sorted(m for m in sys.argv[1:] if m in sys.modules)))
"""

_DOWNLOAD = """
import json, sys

import sts_bridge.client, sts_bridge.workspace
from sts_bridge.cli import _app, transfer_commands
from sts_bridge.s3 import download

print(json.dumps(sorted(m for m in sys.argv[1:] if m in sys.modules)))
"""


def _imported(script: str, *watched: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script, *watched], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    names: list[str] = json.loads(done.stdout)
    return names


def test_a_presign_imports_no_transfer_engine_and_no_http_client() -> None:
    watched = (
        "sts_bridge.s3.upload",
        "sts_bridge.s3.download",
        "sts_bridge.s3.signed_http",
        "mimetypes",
        "urllib3",
        "http.client",
    )
    assert _imported(_PRESIGN, *watched) == []


def test_a_download_imports_no_upload_engine() -> None:
    watched = ("sts_bridge.s3.upload", "sts_bridge.s3.upload_records", "mimetypes")
    assert _imported(_DOWNLOAD, *watched) == []


def test_the_deferred_names_are_still_there() -> None:
    from sts_bridge.s3 import transfers, upload

    assert transfers.composite_checksum is upload.composite_checksum
    assert transfers.matches_filters is upload.matches_filters
    for name in transfers.__all__:
        assert getattr(transfers, name) is not None


_WARM_TOKEN = """
import json, sys

from sts_bridge.auth import client_credentials, factory, refresh

creds = client_credentials.ClientCredentials("https://idp.example/", "cli", "secret")
assert creds.issuer == "https://idp.example", creds.issuer
print(json.dumps(sorted(m for m in sys.argv[1:] if m in sys.modules)))
"""


def test_token_credentials_import_discovery_only_to_contact_the_provider() -> None:
    # A warm command finds its token in the cache: building the credentials and
    # naming the issuer never fetch (nor import) the discovery document's code.
    watched = ("sts_bridge.auth.discovery", "sts_bridge.auth.oauth", "requests", "authlib")
    assert _imported(_WARM_TOKEN, *watched) == []


def test_provider_credentials_given_discovered_metadata_use_it() -> None:
    from sts_bridge.auth.client_credentials import ClientCredentials
    from sts_bridge.auth.discovery import ProviderMetadata

    metadata = ProviderMetadata(issuer="https://idp.example", token_endpoint="https://idp/t")
    creds = ClientCredentials(metadata, "cli", "secret")
    assert creds.issuer == "https://idp.example"
    assert creds.oauth.metadata is metadata  # no discovery request: there is no such host
