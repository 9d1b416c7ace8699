"""The boto3 contender: exactly what the boto3 documentation shows, defaults only.

    python boto3_defaults.py upload FILE BUCKET KEY
    python boto3_defaults.py download BUCKET KEY FILE
    python boto3_defaults.py upload-many DIR BUCKET PREFIX [--threads N]
    python boto3_defaults.py presign BUCKET KEY            (one SigV4 URL on stdout)

Credentials, region and endpoint come from the standard environment
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_DEFAULT_REGION, AWS_ENDPOINT_URL), as a user of boto3 would set them.
``upload_file``/``download_file`` use the default TransferConfig; the
many-files upload is the documented ``upload_file`` in a plain loop, or in a
``ThreadPoolExecutor`` sharing one client (clients are thread-safe) with the
client's default connection pool.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import boto3


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("upload")
    up.add_argument("file")
    up.add_argument("bucket")
    up.add_argument("key")
    down = sub.add_parser("download")
    down.add_argument("bucket")
    down.add_argument("key")
    down.add_argument("file")
    many = sub.add_parser("upload-many")
    many.add_argument("dir")
    many.add_argument("bucket")
    many.add_argument("prefix")
    many.add_argument("--threads", type=int, default=1)
    pre = sub.add_parser("presign")
    pre.add_argument("bucket")
    pre.add_argument("key")
    a = p.parse_args(argv)

    s3 = boto3.client("s3")
    if a.cmd == "upload":
        s3.upload_file(a.file, a.bucket, a.key)
    elif a.cmd == "download":
        s3.download_file(a.bucket, a.key, a.file)
    elif a.cmd == "upload-many":
        names = sorted(os.listdir(a.dir))

        def one(name: str) -> None:
            s3.upload_file(os.path.join(a.dir, name), a.bucket, a.prefix + name)

        if a.threads <= 1:
            for name in names:
                one(name)
        else:
            with ThreadPoolExecutor(max_workers=a.threads) as pool:
                list(pool.map(one, names))
    elif a.cmd == "presign":
        print(s3.generate_presigned_url("get_object", Params={"Bucket": a.bucket, "Key": a.key}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
