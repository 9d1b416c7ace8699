"""TLS: verification is on unless turned off, and a custom CA bundle works.

The reference API is put behind a TLS-terminating relay on loopback whose
certificate is signed by a CA made for this test (not in any trust store).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from source_variants import SourceVariant

import sts_bridge
from sts_bridge.errors import ApiUnavailableError, StorageUnavailableError
from sts_bridge.interop.filesystem import WorkspaceFileSystem
from sts_bridge.s3.objects import ObjectIO

pytestmark = pytest.mark.integration


def _make_ca_and_server_cert(tmp: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sts-bridge test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


class TlsRelay:
    """Accept TLS on a free loopback port and relay bytes to a plain-http upstream."""

    def __init__(self, upstream: tuple[str, int], cert: Path, key: Path) -> None:
        self._upstream = upstream
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.accepted = 0  # connections made to the relay (one per TLS handshake)
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            tls = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()  # e.g. a client that refused our certificate
            return
        upstream = socket.create_connection(self._upstream)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        t = threading.Thread(target=pump, args=(upstream, tls), daemon=True)
        t.start()
        pump(tls, upstream)
        t.join(timeout=5)
        tls.close()
        upstream.close()

    def close(self) -> None:
        self._stopping = True
        self._listener.close()


@pytest.fixture
def tls_api(
    local_platform: Any,
    platform_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, Path]]:
    ca, cert, key = _make_ca_and_server_cert(tmp_path)
    api = urlsplit(local_platform.api_url)
    relay = TlsRelay((api.hostname or "127.0.0.1", api.port or 80), cert, key)
    url = f"https://127.0.0.1:{relay.port}{api.path}"
    monkeypatch.setenv("TERRAPI_URL", url)
    monkeypatch.setenv("STS_BRIDGE_CONFIG_FILE", str(tmp_path / "no-config"))
    # no system-wide CA override may help the client
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield url, ca
    finally:
        relay.close()


def test_verification_is_on_by_default(tls_api: tuple[str, Path]) -> None:
    with pytest.raises(ApiUnavailableError) as excinfo:
        sts_bridge.Client.from_env().workspaces()
    text = str(excinfo.value)
    assert "certificate verification failed" in text
    assert "TERRAPI_CA_BUNDLE" in text  # the hint says what to do


def test_custom_ca_bundle_works(tls_api: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _, ca = tls_api
    monkeypatch.setenv("TERRAPI_CA_BUNDLE", str(ca))
    client = sts_bridge.Client.from_env()
    assert client.workspaces() == ["gep-processing-results-a2s-service-workspace"]
    ws = client.workspace()
    assert ws.verify == str(ca)
    assert ws.credentials().token


def test_insecure_turns_verification_off(
    tls_api: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from urllib3.exceptions import InsecureRequestWarning

    monkeypatch.setenv("TERRAPI_INSECURE", "1")
    with pytest.warns(InsecureRequestWarning):  # turning verification off is never silent
        assert sts_bridge.Client.from_env().workspaces() == [
            "gep-processing-results-a2s-service-workspace"
        ]


# ------------------------------------------------------------------ the object store over TLS
SERVICE_WS = "gep-processing-results-a2s-service-workspace"


@pytest.fixture
def tls_store(
    local_platform: Any, platform_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[Any, Path, TlsRelay]]:
    WorkspaceFileSystem.clear_instance_cache()
    ws = sts_bridge.Client.from_env().workspace(SERVICE_WS)
    ca, cert, key = _make_ca_and_server_cert(tmp_path)
    store = urlsplit(ws.endpoint_url)
    relay = TlsRelay((store.hostname or "127.0.0.1", store.port or 80), cert, key)
    try:
        yield ws, ca, relay
    finally:
        relay.close()
        WorkspaceFileSystem.clear_instance_cache()


def test_the_store_over_tls_with_a_custom_ca_bundle(tls_store: tuple[Any, Path, TlsRelay]) -> None:
    """The SDK's own requests (upload, download, sync, workspace:// bytes) and s3fs
    (workspace:// listing) trust the CA bundle they are given."""
    ws, ca, relay = tls_store
    source = SourceVariant(ws, endpoint_url=f"https://127.0.0.1:{relay.port}", verify=str(ca))
    folder = f"tls-tests/{uuid.uuid4().hex}"
    objects = ObjectIO(source)
    try:
        objects.put(f"{ws.prefix}{folder}/a", b"over tls")
        assert objects.get(f"{ws.prefix}{folder}/a") == b"over tls"
    finally:
        objects.close()
    fs = WorkspaceFileSystem(source)
    fs.pipe_file(f"{SERVICE_WS}/{folder}/b", b"bytes path")
    assert fs.cat_file(f"{SERVICE_WS}/{folder}/b") == b"bytes path"
    assert fs.ls(f"{SERVICE_WS}/{folder}", detail=False) == [
        f"{SERVICE_WS}/{folder}/a",
        f"{SERVICE_WS}/{folder}/b",
    ]
    fs.rm(f"{SERVICE_WS}/{folder}", recursive=True)
    assert relay.accepted >= 2


def test_batches_of_small_writes_over_tls_are_sent_from_the_event_loop(
    tls_store: tuple[Any, Path, TlsRelay], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fs.pipe`` of many small objects over TLS with a private CA: stored by
    the event loop's own connections, verified by the same CA rule (none
    handed to the threads' way); a certificate the rule does not trust is
    refused in one sentence with its hint, as on the threads."""
    from sts_bridge.interop import filesystem

    ws, ca, relay = tls_store
    handed: list[str] = []
    on_threads = filesystem._stored
    monkeypatch.setattr(
        filesystem, "_stored", lambda *item: handed.append(item[3]) or on_threads(*item)
    )
    endpoint = f"https://127.0.0.1:{relay.port}"
    fs = WorkspaceFileSystem(SourceVariant(ws, endpoint_url=endpoint, verify=str(ca)))
    folder = f"{SERVICE_WS}/tls-tests/{uuid.uuid4().hex}"
    blobs = {f"{folder}/{i:03d}": os.urandom(1000 + i) for i in range(60)}
    before = relay.accepted
    answers = fs.pipe(blobs)
    assert handed == []
    assert [a["ETag"] for a in answers] == [hashlib.md5(b).hexdigest() for b in blobs.values()]  # noqa: S324
    assert relay.accepted > before  # the loop's own connections, through the relay
    assert fs.cat(list(blobs)) == blobs
    untrusted = WorkspaceFileSystem(SourceVariant(ws, endpoint_url=endpoint, verify=True))
    with pytest.raises(OSError) as info:
        untrusted.pipe({f"{folder}/refused-{i}": b"x" for i in range(3)})
    message = str(info.value)
    assert "TLS certificate verification failed" in message and "\n" not in message, message
    assert len(handed) >= 1  # the loop's handshake failed: the threads said why
    fs.rm(folder, recursive=True)


def test_a_multipart_upload_over_tls_sends_each_part_from_the_file(
    tls_store: tuple[Any, Path, TlsRelay], tmp_path: Path
) -> None:
    """Parts read from the file while they are sent go through TLS (no
    ``sendfile`` there) byte for byte: the store checks every part's signed
    SHA-256, and the object reads back as the file."""
    import os

    from sts_bridge.s3.config import TransferConfig
    from sts_bridge.s3.digests import path_composite_sha256
    from sts_bridge.s3.transfers import TransferEngine

    ws, ca, relay = tls_store
    source = SourceVariant(ws, endpoint_url=f"https://127.0.0.1:{relay.port}", verify=str(ca))
    data = os.urandom(12 * 1024 * 1024 + 5)
    path = tmp_path / "parts.bin"
    path.write_bytes(data)
    config = TransferConfig(part_size=5 * 1024 * 1024, multipart_threshold=1)
    engine = TransferEngine(source, config, state_dir=tmp_path / "records")  # type: ignore[arg-type]
    key = f"tls-tests/{uuid.uuid4().hex}/parts.bin"
    result = engine.upload(path, key)
    assert result.parts == 3
    assert result.checksum == f"sha256:{path_composite_sha256(path, 5 * 1024 * 1024)}"
    objects = ObjectIO(source)
    try:
        assert objects.get(f"{ws.prefix}{key}") == data
    finally:
        objects.close()
    ws.delete(key)
    assert relay.accepted >= 1


def test_the_store_over_tls_refuses_an_unknown_certificate_at_once(
    tls_store: tuple[Any, Path, TlsRelay],
) -> None:
    """Verification is on by default; a certificate that does not verify is said
    in one sentence with a hint, and not retried (one handshake)."""
    ws, _, relay = tls_store
    source = SourceVariant(ws, endpoint_url=f"https://127.0.0.1:{relay.port}", verify=True)
    objects = ObjectIO(source)
    before = relay.accepted
    try:
        with pytest.raises(StorageUnavailableError) as info:
            objects.get(f"{ws.prefix}tls-tests/anything")
    finally:
        objects.close()
    message = str(info.value)
    assert "TLS certificate verification failed" in message and "\n" not in message, message
    assert info.value.hint and "TERRAPI_CA_BUNDLE" in info.value.hint
    assert relay.accepted - before == 1


def test_the_store_over_tls_without_verification_warns(
    tls_store: tuple[Any, Path, TlsRelay],
) -> None:
    from urllib3.exceptions import InsecureRequestWarning

    ws, _, relay = tls_store
    source = SourceVariant(ws, endpoint_url=f"https://127.0.0.1:{relay.port}", verify=False)
    key = f"{ws.prefix}tls-tests/{uuid.uuid4().hex}"
    objects = ObjectIO(source)
    try:
        with pytest.warns(InsecureRequestWarning):  # turning verification off is never silent
            objects.put(key, b"unverified")
            assert objects.get(key) == b"unverified"
    finally:
        objects.close()
    ws.delete(key.removeprefix(ws.prefix))


# ------------------------------------------------------------------ one CA rule, every variable
CA_VARIABLES = ["TERRAPI_CA_BUNDLE", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"]


@pytest.mark.parametrize("variable", CA_VARIABLES)
def test_each_variable_of_the_ca_rule_reaches_every_connection(
    tls_api: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """A private CA named by any one variable of the rule is trusted by the API
    client, the S3 engine (ObjectIO, the transfer engine), boto3 and s3fs; with
    none of them set, the same endpoints are refused."""
    _, ca = tls_api
    monkeypatch.setenv(variable, str(ca))
    client = sts_bridge.Client.from_env()
    assert client.workspaces() == [SERVICE_WS]  # the API over TLS
    ws = client.workspace(SERVICE_WS)
    assert ws.verify == str(ca)
    cert, tls_key = ca.parent / "server.pem", ca.parent / "server.key"  # made with ca
    store = urlsplit(ws.endpoint_url)
    relay = TlsRelay((store.hostname or "127.0.0.1", store.port or 80), cert, tls_key)
    WorkspaceFileSystem.clear_instance_cache()
    try:
        source = SourceVariant(ws, endpoint_url=f"https://127.0.0.1:{relay.port}")
        assert source.verify == str(ca)  # what the rule chose travels with the workspace
        folder = f"tls-tests/{uuid.uuid4().hex}"
        objects = ObjectIO(source)
        try:
            objects.put(f"{ws.prefix}{folder}/a", b"engine")  # the S3 engine
            assert objects.get(f"{ws.prefix}{folder}/a") == b"engine"
        finally:
            objects.close()
        fs = WorkspaceFileSystem(source)  # s3fs (aiobotocore) for listing
        assert fs.ls(f"{SERVICE_WS}/{folder}", detail=False) == [f"{SERVICE_WS}/{folder}/a"]
        from sts_bridge.config import trusted_cas
        from sts_bridge.interop.boto import s3_client

        boto = s3_client(  # boto3, as `ls` and `rm` use it
            ws.refreshing,
            endpoint_url=source.endpoint_url,
            region=ws.region,
            verify=ws.verify,
        )
        listed = boto.list_objects_v2(Bucket=ws.bucket, Prefix=f"{ws.prefix}{folder}/")
        assert [o["Key"] for o in listed["Contents"]] == [f"{ws.prefix}{folder}/a"]
        boto.delete_object(Bucket=ws.bucket, Key=f"{ws.prefix}{folder}/a")
        assert trusted_cas(ws.verify) == str(ca)
    finally:
        relay.close()
        WorkspaceFileSystem.clear_instance_cache()
    assert relay.accepted >= 3


# ------------------------------------------------------------------ polars and a private CA
POLARS_CHILD = textwrap.dedent(
    """
    import sys, warnings
    sys.path.insert(0, sys.argv[4])
    import polars as pl
    import sts_bridge
    from source_variants import SourceVariant
    from sts_bridge.interop.tool_credentials import PolarsCaWarning, polars_options

    endpoint, ca, key = sys.argv[1:4]
    ws = sts_bridge.Client.from_env().workspace(sys.argv[5])
    source = SourceVariant(ws, endpoint_url=endpoint, verify=ca)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        options = polars_options(source)
    print("warned" if any(w.category is PolarsCaWarning for w in said) else "quiet", flush=True)
    frame = pl.DataFrame({"x": [1, 2, 3]})
    frame.write_parquet(ws.s3_url(key), **options)
    assert pl.read_parquet(ws.s3_url(key), **options).equals(frame)
    print("read back", flush=True)
    """
)


def test_polars_trusts_a_private_ca_through_ssl_cert_file(
    tls_store: tuple[Any, Path, TlsRelay], tmp_path: Path
) -> None:
    """polars takes no CA option: the README's route (SSL_CERT_FILE naming the
    bundle) reaches the store over TLS; without it polars refuses the
    certificate and ``polars_options`` said so beforehand."""
    pytest.importorskip("polars")
    ws, ca, relay = tls_store
    script = tmp_path / "polars_child.py"
    script.write_text(POLARS_CHILD)
    key = f"tls-tests/{uuid.uuid4().hex}/polars.parquet"
    tests_dir = str(Path(__file__).parent)
    endpoint = f"https://127.0.0.1:{relay.port}"
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}

    def run(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(script), endpoint, str(ca), key, tests_dir, SERVICE_WS]
        return subprocess.run(
            argv, env={**env, **extra}, capture_output=True, text=True, timeout=120
        )

    refused = run({})
    assert refused.returncode != 0
    assert refused.stdout.splitlines() == ["warned"]
    assert "certificate" in refused.stderr.lower(), refused.stderr[-2000:]
    trusted = run({"SSL_CERT_FILE": str(ca)})
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert trusted.stdout.splitlines() == ["quiet", "read back"]
    ws.delete(key)
