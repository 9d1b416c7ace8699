"""The public surface of ``sts_bridge``: ``__all__`` is exact and importing is cheap."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import sts_bridge
from sts_bridge import errors

EXPECTED = {
    "Client",
    "Workspace",
    "S3Credentials",
    "upload_to_workspace",
    "UploadResult",
    "TransferConfig",
    "ObjectInfo",
    "PresignedUrl",
    "PresignClampedWarning",
    "__version__",
    *errors.__all__,
}


def test_all_is_exactly_the_public_surface() -> None:
    assert set(sts_bridge.__all__) == EXPECTED
    assert len(sts_bridge.__all__) == len(set(sts_bridge.__all__))
    assert sts_bridge.__all__ == sorted(sts_bridge.__all__, key=str)


def test_every_name_resolves() -> None:
    for name in sts_bridge.__all__:
        assert getattr(sts_bridge, name) is not None
    from sts_bridge.client import Client
    from sts_bridge.workspace import Workspace

    assert sts_bridge.Client is Client and sts_bridge.Workspace is Workspace
    assert sts_bridge.WorkspaceNotFoundError is errors.WorkspaceNotFoundError


def test_generated_client_is_not_star_exported() -> None:
    assert not hasattr(sts_bridge, "StorageApi")
    assert "terrapi_client" not in sts_bridge.__all__


def test_import_is_light() -> None:
    code = (
        "import sys, sts_bridge; "
        "print(sorted(m for m in ('boto3', 'botocore', 'terrapi_client', 'pydantic', 'authlib')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_readme_python_api_lists_exactly_the_public_names() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    paragraph = section.split("The public names of `sts_bridge`", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", paragraph.split(":", 1)[1])
    assert sorted(listed) == sorted(sts_bridge.__all__)
    assert len(listed) == len(set(listed))
