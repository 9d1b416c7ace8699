"""The sts-bridge SDK contender: one call, as the README shows it.

    python stsb_sdk.py upload WORKSPACE PATH KEY     (file or directory)
    python stsb_sdk.py download WORKSPACE KEY DEST

Configuration comes from the TERRAPI_* environment (service client), the
STS credentials from the warm cross-process cache, like a user's second run.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    cmd, workspace = argv[0], argv[1]
    if cmd == "upload":
        from sts_bridge import upload_to_workspace

        upload_to_workspace(argv[2], argv[3], workspace=workspace)
    elif cmd == "download":
        from sts_bridge import Client

        Client.from_env().workspace(workspace).download(argv[2], argv[3])
    else:
        raise SystemExit(f"unknown command {cmd!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
