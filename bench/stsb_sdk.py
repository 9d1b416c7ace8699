"""The sts-bridge SDK contender: one call, as the README shows it.

    python stsb_sdk.py upload WORKSPACE PATH KEY     (file or directory)
    python stsb_sdk.py download WORKSPACE KEY DEST
    python stsb_sdk.py download-direct WORKSPACE KEY DEST   (O_DIRECT from 64 MiB)
    python stsb_sdk.py upload-50m WORKSPACE FILE KEY   (s5cmd's parts: 50 MiB, 5 in flight)
    python stsb_sdk.py upload-knobs WORKSPACE FILE KEY PART_MIB IN_FLIGHT
    python stsb_sdk.py download-knobs WORKSPACE KEY DEST RANGE_MIB IN_FLIGHT

and the pieces the CPU profile subtracts from an upload (bench/run.py profile):

    python stsb_sdk.py import                 Python start + ``import sts_bridge`` + boto3
    python stsb_sdk.py setup WORKSPACE        + the workspace and its cached credentials
    python stsb_sdk.py sha256 FILE            SHA-256 of the file alone (8 MiB preads)

Configuration comes from the TERRAPI_* environment (service client), the
STS credentials from the warm cross-process cache, like a user's second run.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    cmd = argv[0]
    if cmd == "import":
        import boto3

        import sts_bridge  # noqa: F401
        from sts_bridge import Client, upload_to_workspace

        return 0
    if cmd == "sha256":
        import hashlib

        h = hashlib.sha256()
        fd = os.open(argv[1], os.O_RDONLY)
        try:
            off = 0
            while chunk := os.pread(fd, 8 << 20, off):
                h.update(chunk)
                off += len(chunk)
        finally:
            os.close(fd)
        print(h.hexdigest())
        return 0
    workspace = argv[1]
    if cmd == "setup":
        import boto3  # noqa: F401

        from sts_bridge import Client

        ws = Client.from_env().workspace(workspace)
        ws.credentials()
        ws.s3_client()
        return 0
    if cmd == "upload":
        from sts_bridge import Client, upload_to_workspace

        if os.path.isdir(argv[2]):  # a folder of small files: one call, files in parallel
            Client.from_env().workspace(workspace).upload_directory(argv[2], argv[3])
        else:
            upload_to_workspace(argv[2], argv[3], workspace=workspace)
    elif cmd == "download":
        from sts_bridge import Client

        Client.from_env().workspace(workspace).download(argv[2], argv[3])
    elif cmd == "upload-50m":  # the A/B of the part size and concurrency against s5cmd's
        from sts_bridge import Client, TransferConfig

        config = TransferConfig(part_size=50 * 1024 * 1024, part_concurrency=5)
        Client(transfer_config=config).workspace(workspace).upload(argv[2], argv[3])
    elif cmd == "upload-knobs":  # the A/B grid of part size x parts in flight
        from sts_bridge import Client, TransferConfig

        part, flight = int(argv[4]) * 1024 * 1024, int(argv[5])
        config = TransferConfig(part_size=part, part_concurrency=flight)
        Client(transfer_config=config).workspace(workspace).upload(argv[2], argv[3])
    elif cmd == "download-knobs":  # the A/B grid of range size x ranges in flight
        from sts_bridge import Client, TransferConfig

        size, flight = int(argv[4]) * 1024 * 1024, int(argv[5])
        config = TransferConfig(range_size=size, range_concurrency=flight)
        Client(transfer_config=config).workspace(workspace).download(argv[2], argv[3])
    elif cmd == "download-direct":  # the A/B of TransferConfig.direct_io_min_size
        from sts_bridge import Client, TransferConfig

        config = TransferConfig(direct_io_min_size=64 * 1024 * 1024)
        Client(transfer_config=config).workspace(workspace).download(argv[2], argv[3])
    else:
        raise SystemExit(f"unknown command {cmd!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
