"""`make check-generated` passes on a clean tree and fails on drift."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv"


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    if not (VENV / "bin" / "openapi-generator-cli").exists():
        pytest.fail("openapi-generator-cli is missing from .venv: run `make setup`")
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("openapi", "generated_client"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "Makefile", root / "Makefile")
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
    ):
        assert _run(cmd, root).returncode == 0
    return root


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return _run(["make", "-s", "check-generated", f"VENV={VENV}"], root)


def test_clean_tree_passes(checkout: Path) -> None:
    result = _check(checkout)
    assert result.returncode == 0, result.stdout + result.stderr


def test_spec_changed_without_regenerating_fails(checkout: Path) -> None:
    spec = checkout / "openapi" / "terrapi.yaml"
    text = spec.read_text()
    marker = "        background_job_id:\n"
    assert marker in text
    new_field = "        quota_bytes:\n          type: integer\n"
    spec.write_text(text.replace(marker, new_field + marker, 1))
    result = _check(checkout)
    assert result.returncode != 0
    assert "differs" in result.stdout + result.stderr


def test_untracked_file_in_the_client_fails(checkout: Path) -> None:
    (checkout / "generated_client" / "terrapi_client" / "extra.py").write_text("x = 1\n")
    assert _check(checkout).returncode != 0
