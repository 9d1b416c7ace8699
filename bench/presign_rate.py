"""URLs per second: ``Workspace.presign_many`` vs boto3's SigV4 ``generate_presigned_url`` loop.

    python presign_rate.py boto3 BUCKET PREFIX N EXPIRES            (AWS_* environment)
    python presign_rate.py sts-bridge WORKSPACE N EXPIRES [--check]  (TERRAPI_* environment)

EXPIRES is the URLs' lifetime in seconds. It matters to sts-bridge only: a URL
cannot outlive the credentials that sign it, so asking for more than the
credentials have left makes ``presign_many`` try a refresh first (an API
request inside the timed call) and then clamp.

Only the signing is timed (``time.perf_counter`` around the call or loop),
after one warm-up URL, so client construction and the credential fetch are
not part of the rate. Prints one JSON line: ``{"urls_per_s": ..., ...}``.

``--check`` then proves the URLs byte-identical to botocore's: it reads the
signing instant (``X-Amz-Date``) and ``X-Amz-Expires`` back from the
sts-bridge URLs, freezes botocore's clock at that instant, and compares all
N URLs with ``generate_presigned_url`` (``signature_version="s3v4"``, same
credentials, region, endpoint and addressing style).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import warnings
from typing import Any
from urllib.parse import parse_qs, urlsplit


def keys(n: int) -> list[str]:
    # realistic names, a few needing percent-encoding
    shapes = (
        "results/run-{i:05d}/output.parquet",
        "share/{i:05d} report (final).pdf",
        "data/ü-{i:05d}~x+y.csv",
        "logs/{i:05d}.log",
    )
    return [shapes[i % len(shapes)].format(i=i) for i in range(n)]


def _url(u: Any) -> str:
    return u if isinstance(u, str) else str(getattr(u, "url", u))


def run_boto3(bucket: str, prefix: str, n: int, expires: int) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
    ks = [prefix + k for k in keys(n)]
    s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": ks[0]})
    t0 = time.perf_counter()
    for k in ks:
        s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": k}, ExpiresIn=expires
        )
    el = time.perf_counter() - t0
    return {"urls_per_s": n / el, "seconds": el}


def botocore_urls(ws: Any, full_keys: list[str], when: dt.datetime, expires: int) -> list[str]:
    import boto3
    import botocore.auth
    from botocore.config import Config

    c = ws.credentials()
    s3 = boto3.client(
        "s3",
        endpoint_url=ws.endpoint_url,
        region_name=ws.region,
        aws_access_key_id=c.access_key,
        aws_secret_access_key=c.secret_key,
        aws_session_token=c.token,
        config=Config(signature_version="s3v4", s3={"addressing_style": ws.addressing_style}),
    )
    naive = when.replace(tzinfo=None)
    saved = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda remove_tzinfo=True: naive  # type: ignore[assignment]
    try:
        return [
            s3.generate_presigned_url(
                "get_object", Params={"Bucket": ws.bucket, "Key": k}, ExpiresIn=expires
            )
            for k in full_keys
        ]
    finally:
        botocore.auth.get_current_datetime = saved  # type: ignore[assignment]


def run_sts(workspace: str, n: int, expires: int, check: bool) -> dict[str, Any]:
    from sts_bridge import Client

    ws = Client.from_env().workspace(workspace)
    ks = keys(n)
    ws.presign_many(ks[:1], expires_in=expires)  # credentials fetched/cached, signer built
    t0 = time.perf_counter()
    urls = [_url(u) for u in ws.presign_many(ks, expires_in=expires)]
    el = time.perf_counter() - t0
    out: dict[str, Any] = {"urls_per_s": n / el, "seconds": el}
    if check:
        q = parse_qs(urlsplit(urls[0]).query)
        when = dt.datetime.strptime(q["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=dt.timezone.utc
        )
        expires = int(q["X-Amz-Expires"][0])
        ref = botocore_urls(ws, [ws.prefix + k for k in ks], when, expires)
        diff = [i for i, (a, b) in enumerate(zip(urls, ref, strict=False)) if a != b]
        out["identical"] = not diff and len(urls) == len(ref)
        out["compared"] = len(ref)
        out["different"] = len(diff)
        if diff:
            out["first_difference"] = {"sts-bridge": urls[diff[0]], "botocore": ref[diff[0]]}
    return out


def main(argv: list[str]) -> int:
    warnings.simplefilter("ignore")  # PresignClampedWarning for the 1 h variant
    if argv[0] == "boto3":
        doc = run_boto3(argv[1], argv[2], int(argv[3]), int(argv[4]))
    else:
        doc = run_sts(argv[1], int(argv[2]), int(argv[3]), "--check" in argv)
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
