"""Pure helpers of the transfer modules and presign clamping (no network)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from sts_bridge.errors import CredentialsError, InvalidKeyError
from sts_bridge.s3.digests import MAX_PARTS
from sts_bridge.s3.signed_http import MiB
from sts_bridge.s3.transfers import (
    PresignClampedWarning,
    TransferEngine,
    choose_part_size,
    composite_checksum,
    matches_filters,
    parse_duration,
)
from sts_bridge.s3.upload import guess_content_type


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("900", 900), ("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800), ("1.5h", 5400)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1y", "-5", "1 hour"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_choose_part_size() -> None:
    assert choose_part_size(100 * MiB, 8 * MiB) == 8 * MiB
    assert choose_part_size(100 * MiB, 1 * MiB) == 5 * MiB  # S3 minimum
    huge = 200 * 1024 * MiB  # 200 GiB needs bigger parts to fit 10,000
    size = choose_part_size(huge, 8 * MiB)
    assert size * MAX_PARTS >= huge and size % MiB == 0


@pytest.mark.parametrize(
    ("size", "part_size"),
    [
        (16 * MiB, 8 * MiB),  # the multipart threshold: 2 parts
        (100 * MiB, 8 * MiB),
        (300_000_000, 9 * MiB),  # 286.1 MiB: 35.8 parts of 8 MiB, 31.8 of 9
        (256 * MiB, 8 * MiB),  # 32 parts of 8 MiB: still 8 MiB
        (256 * MiB + 1, 9 * MiB),
        (1024 * MiB, 32 * MiB),
        (2048 * MiB, 64 * MiB),
        (100 * 1024 * MiB, 64 * MiB),  # 1,600 parts: parts stop growing at 64 MiB
        (10_000 * 64 * MiB, 64 * MiB),
        (640 * 1024 * MiB, 66 * MiB),  # 10,000 parts need 65.5 MiB each, in whole MiB
    ],
)
def test_the_automatic_part_size_grows_with_the_file(size: int, part_size: int) -> None:
    assert choose_part_size(size) == part_size
    assert choose_part_size(size, None) == part_size


def test_an_explicit_part_size_wins_over_the_automatic_one() -> None:
    assert choose_part_size(1024 * MiB, 8 * MiB) == 8 * MiB
    assert choose_part_size(100 * MiB, 50 * MiB) == 50 * MiB
    assert choose_part_size(1024 * MiB, 5 * MiB) == 5 * MiB


def test_composite_checksum() -> None:
    import hashlib

    d1, d2 = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    assert composite_checksum([d1, d2]) == f"sha256:{hashlib.sha256(d1 + d2).hexdigest()}-2"


@pytest.mark.parametrize(
    ("path", "include", "exclude", "expected"),
    [
        ("a/b/c.tif", None, None, True),
        ("a/b/c.tif", ["*.tif"], None, True),
        ("a/b/c.txt", ["*.tif"], None, False),
        ("a/b/c.tif", ["a/*"], None, True),
        ("x/b/c.tif", ["a/*"], None, False),
        ("tmp/c.tif", ["*.tif"], ["tmp/*"], False),
        ("a/.git/config", None, [".git", ".git/*", "*/.git/*"], False),
        ("c.tif", None, ["*.txt"], True),
    ],
)
def test_matches_filters(
    path: str, include: list[str] | None, exclude: list[str] | None, expected: bool
) -> None:
    assert matches_filters(path, include, exclude) is expected


def test_guess_content_type() -> None:
    assert guess_content_type("a/b.json") == "application/json"
    assert guess_content_type("a/b.tif") == "image/tiff"
    assert guess_content_type("a/noext") == "application/octet-stream"


# ------------------------------------------------------------------ presign
@dataclass(frozen=True)
class Creds:
    access_key: str
    secret_key: str
    token: str | None
    expiry: datetime | None


class EngineFacade:
    """The data operations of ``Workspace`` over this fake, through the engine as ``Workspace``."""

    def upload(self, *args: Any, **kwargs: Any) -> Any:
        return TransferEngine(self).upload(*args, **kwargs)  # type: ignore[arg-type]

    def download(self, *args: Any, **kwargs: Any) -> Any:
        return TransferEngine(self).download(*args, **kwargs)  # type: ignore[arg-type]

    def download_fileobj(self, *args: Any, **kwargs: Any) -> Any:
        return TransferEngine(self).download_fileobj(*args, **kwargs)  # type: ignore[arg-type]

    def list(self, *args: Any, **kwargs: Any) -> Any:
        return TransferEngine(self).list(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        return TransferEngine(self).delete(*args, **kwargs)  # type: ignore[arg-type]

    def presign(self, *args: Any, **kwargs: Any) -> Any:
        return TransferEngine(self).presign(*args, warn_stacklevel=4, **kwargs)  # type: ignore[arg-type]

    def presign_many(self, *args: Any, **kwargs: Any) -> Any:
        return TransferEngine(self).presign_many(*args, warn_stacklevel=4, **kwargs)  # type: ignore[arg-type]


@dataclass
class Offline(EngineFacade):
    """Only what presign needs; records credentials_for() calls."""

    lifetime: float | None  # seconds left on the credentials
    asked: list[float] = field(default_factory=list)
    name: str = "ws"
    bucket: str = "bkt"
    prefix: str = "a2s/"
    endpoint_url: str = "http://127.0.0.1:8000"
    region: str = "us-east-1"
    addressing_style: str = "path"
    verify: bool | str = True

    def credentials_for(self, min_lifetime: float) -> Creds:
        self.asked.append(min_lifetime)
        expiry = None
        if self.lifetime is not None:
            expiry = datetime.now(timezone.utc) + timedelta(seconds=self.lifetime)
        return Creds("AK", "SK", "TOK" if expiry else None, expiry)

    def credentials(self) -> Any:
        raise AssertionError("presign must ask credentials_for()")

    def s3_client(self) -> Any:
        raise AssertionError("presign makes no request")


def _expires(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])


def test_presign_not_clamped_when_credentials_live_longer() -> None:
    ws = Offline(lifetime=7200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        url = ws.presign("a b.txt", expires_in=3600)
    assert ws.asked == [3600]
    assert _expires(url.url) == 3600
    assert url.key == "a b.txt" and url.method == "GET"
    assert "/bkt/a2s/a%20b.txt?" in url.url
    signed_at = datetime.strptime(
        parse_qs(urlsplit(url.url).query)["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"
    ).replace(tzinfo=timezone.utc)
    assert url.expires_at == signed_at + timedelta(seconds=3600)


def test_presign_clamped_to_credentials_and_warns() -> None:
    ws = Offline(lifetime=900)
    with pytest.warns(PresignClampedWarning, match="not 3600s") as record:
        url = ws.presign("k", "PUT", timedelta(hours=1))
    assert record[0].filename == __file__  # points at the caller
    assert 897 <= _expires(url.url) <= 900
    assert url.expires_at <= datetime.now(timezone.utc) + timedelta(seconds=900)
    assert url.method == "PUT"


def test_presign_clamp_is_told_to_on_clamp_instead_of_warned() -> None:
    # `sts-bridge run` presigns in many threads: a callback, not process-wide warnings
    ws = Offline(lifetime=900)
    told: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (url,) = TransferEngine(ws).presign_many(["k"], "GET", 3600, on_clamp=told.append)  # type: ignore[arg-type]
    assert len(told) == 1 and "not 3600s" in told[0]
    assert 897 <= _expires(url.url) <= 900


def test_presign_static_credentials_up_to_seven_days() -> None:
    ws = Offline(lifetime=None)
    url = ws.presign("k", expires_in=7 * 86400)
    assert _expires(url.url) == 7 * 86400
    assert "X-Amz-Security-Token" not in url.url
    with pytest.raises(ValueError):
        ws.presign("k", expires_in=7 * 86400 + 1)
    with pytest.raises(ValueError):
        ws.presign("k", method="POST")


def test_presign_expired_credentials() -> None:
    with pytest.raises(CredentialsError):
        Offline(lifetime=0.2).presign("k")


def test_presign_many_checks_every_key_before_credentials() -> None:
    ws = Offline(lifetime=7200)
    with pytest.raises(InvalidKeyError):
        ws.presign_many(["ok", "../nope"])
    assert ws.asked == []
    urls = ws.presign_many([f"k{i}" for i in range(100)], expires_in=60)
    assert len({u.url for u in urls}) == 100
    assert len({u.expires_at for u in urls}) == 1


@dataclass
class Rotating(Offline):
    """Hands out the same snapshot until the test replaces it."""

    current: Creds = field(default_factory=lambda: Creds("AK1", "SK1", None, None))

    def credentials_for(self, min_lifetime: float) -> Creds:
        return self.current


def _signed_again(url: str, target: Rotating) -> str:
    """``url`` signed afresh by a new signer, at its own X-Amz-Date."""
    from sts_bridge.s3.signer import Signer

    query = parse_qs(urlsplit(url).query)
    at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    signer = Signer.for_place(target, target.current)
    return signer.presign("a2s/k", "GET", int(query["X-Amz-Expires"][0]), now=at)


def test_one_engine_presigns_with_the_credentials_and_place_of_each_call() -> None:
    # The engine keeps its signer (and signing key) from one presign to the
    # next (`sts-bridge run`: a thousand one-key lines), but never past new
    # credentials or a new endpoint (a workspace described again).
    target = Rotating(lifetime=None)
    engine = TransferEngine(target)  # type: ignore[arg-type]
    first = engine.presign("k", expires_in=60).url
    assert "X-Amz-Credential=AK1%2F" in first and first == _signed_again(first, target)
    target.current = Creds("AK2", "SK2", "TOK2", None)
    second = engine.presign("k", expires_in=60).url
    assert "X-Amz-Credential=AK2%2F" in second and "X-Amz-Security-Token=TOK2" in second
    assert second == _signed_again(second, target)
    target.endpoint_url = "http://127.0.0.2:9000"
    third = engine.presign("k", expires_in=60).url
    assert third.startswith("http://127.0.0.2:9000/bkt/a2s/k?")
    assert third == _signed_again(third, target)


def test_etag_md5_only_for_plain_md5_etags() -> None:
    from sts_bridge.s3.download import _etag_md5

    md5 = "0" * 31 + "a"
    assert _etag_md5(md5, {}) == (md5, "")
    assert _etag_md5(md5 + "-3", {})[0] is None
    assert "multipart" in _etag_md5(md5 + "-3", {})[1]
    assert _etag_md5("", {})[0] is None
    assert _etag_md5(md5, {"x-amz-server-side-encryption": "aws:kms"})[0] is None
    sse_c = {"x-amz-server-side-encryption-customer-algorithm": "AES256"}
    assert _etag_md5(md5, sse_c)[0] is None
    assert _etag_md5(md5, {"x-amz-server-side-encryption": "AES256"}) == (md5, "")


def test_page_cache_writes_are_at_most_256_kib(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1 MiB read goes to the file in writes of PAGE_CACHE_WRITE: a write of
    1 MiB or more makes the kernel take large folios, whose first touch costs
    several times more on a VM that reports free memory to its host."""
    import os

    from sts_bridge.s3 import download

    assert download.PAGE_CACHE_WRITE == 256 * 1024
    data = os.urandom(1 * MiB + 5)
    writes: list[tuple[int, int]] = []
    pwrite = os.pwrite

    def recording(fd: int, view: Any, offset: int) -> int:
        writes.append((offset, len(view)))
        return pwrite(fd, view, offset)

    monkeypatch.setattr(os, "pwrite", recording)
    path = tmp_path / "f.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        download._pwrite_all(fd, memoryview(data), 7, "downloading 'k'")
    finally:
        os.close(fd)
    cap = download.PAGE_CACHE_WRITE
    assert writes == [(7 + i, min(cap, len(data) - i)) for i in range(0, len(data), cap)]
    assert path.read_bytes() == bytes(7) + data


def test_small_xml_answers() -> None:
    from sts_bridge.s3.signed_http import xml_blocks, xml_text

    data = (
        b'<?xml version="1.0"?><ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<IsTruncated>true</IsTruncated><NextPartNumberMarker>2</NextPartNumberMarker>"
        b"<Part><PartNumber>1</PartNumber><ETag>&quot;abc&quot;</ETag><Size>5</Size></Part>"
        b'<Part><PartNumber>2</PartNumber><ETag>"def"</ETag><Size>6</Size></Part>'
        b"</ListPartsResult>"
    )
    assert xml_text(data, "IsTruncated") == "true"
    assert xml_text(data, "NextPartNumberMarker") == "2"
    parts = xml_blocks(data, "Part")
    assert [xml_text(p, "PartNumber") for p in parts] == ["1", "2"]
    assert [xml_text(p, "ETag") for p in parts] == ['"abc"', '"def"']
    assert xml_text(data, "Missing") == ""
    assert xml_text(b"<Error><Code>NoSuchUpload</Code></Error>", "Code") == "NoSuchUpload"


def test_content_range() -> None:
    from sts_bridge.errors import TransferError
    from sts_bridge.s3.download import _range_start, _total_size

    @dataclass
    class R:
        status: int
        headers: dict[str, str]

    assert _total_size(R(206, {"Content-Range": "bytes 0-9/100"})) == 100
    assert _range_start(R(206, {"Content-Range": "bytes 10-19/100"})) == 10
    assert _total_size(R(200, {"Content-Length": "7"})) == 7
    with pytest.raises(TransferError):
        _total_size(R(206, {"Content-Range": "bytes */100"}))


def test_read_small_reads_exactly_and_sees_growth_and_shrinking(tmp_path: Any) -> None:
    from sts_bridge.s3.upload import _read_small

    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    assert _read_small(path, 1000) == b"x" * 1000
    # the file grew since it was listed: one more byte comes back (the caller refuses it)
    assert len(_read_small(path, 999)) == 1000
    # the file shrank: fewer bytes come back
    assert _read_small(path, 2000) == b"x" * 1000
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert _read_small(empty, 0) == b""


def test_plan_upload_of_a_directory_stats_each_file_once_and_skips_non_files(
    tmp_path: Any,
) -> None:
    import os

    root = tmp_path / "d"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"abc")
    (root / "sub" / "b.bin").write_bytes(b"x" * 10)
    (root / "gone").symlink_to(root / "missing")  # broken symlink: skipped, and said
    (root / "link.txt").symlink_to(root / "a.txt")  # a symlink to a file: uploaded, as before
    calls: list[str] = []
    real_stat = os.stat

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "stat", counting)
        skipped: list[tuple[str, str]] = []
        specs = TransferEngine(Offline(lifetime=None))._plan_upload(  # type: ignore[arg-type]
            root, "up/", None, {}, None, None, on_skip=lambda p, r: skipped.append((p, r))
        )
    assert skipped == [(str(root / "gone"), "a dangling symbolic link")]  # said, not silent
    assert [(s.key, s.full_key, s.size) for s in specs] == [
        ("up/a.txt", "a2s/up/a.txt", 3),
        ("up/link.txt", "a2s/up/link.txt", 3),
        ("up/sub/b.bin", "a2s/up/sub/b.bin", 10),
    ]
    per_file = [c for c in calls if c.startswith(os.fspath(root) + os.sep)]
    assert len(per_file) == len(set(per_file)) == 4  # one stat per entry, broken link included
