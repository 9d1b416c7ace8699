"""The resident helper's decisions that need no server: when it is on, where
its socket lives, which installation it belongs to."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sts_bridge.cli import resident


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("0", None),
        ("off", None),
        ("1", 600.0),
        ("on", 600.0),
        ("30", 30.0),
        ("2.5", 2.5),
    ],
)
def test_idle_seconds(value: str | None, seconds: float | None) -> None:
    assert resident.idle_seconds(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-5", "inf", "nan"])
def test_a_bad_value_is_noted_and_turns_it_off(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert resident.idle_seconds(value) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "STS_BRIDGE_RESIDENT" in err and "1 (on)" in err


def test_the_socket_lives_in_the_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STS_BRIDGE_CACHE_DIR", str(tmp_path))
    path = Path(resident.socket_path())
    assert path.parent == tmp_path / "resident"
    assert path.name == f"{resident.fingerprint()}.sock"
    monkeypatch.delenv("STS_BRIDGE_CACHE_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert Path(resident.socket_path()).parent == tmp_path / "run" / "sts-bridge"


def test_a_socket_path_too_long_for_sockaddr_un_is_reached_through_its_folder(
    tmp_path: Path,
) -> None:
    import socket

    folder = tmp_path / ("long-" * 25)
    folder.mkdir()
    path = str(folder / "helper.sock")
    assert len(path) > 108
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
        with resident._address(path) as address:
            server.bind(address)
        server.listen(1)
        with resident._address(path) as address:
            client.connect(address)
        assert (folder / "helper.sock").is_socket()


def test_edited_sources_are_another_installation(tmp_path: Path) -> None:
    package = tmp_path / "sts_bridge"
    (package / "sub").mkdir(parents=True)
    module = package / "sub" / "m.py"
    module.write_text("x = 1\n")
    before = resident.fingerprint(str(package))
    os.utime(module, ns=(1, module.stat().st_mtime_ns + 10**9))
    assert resident.fingerprint(str(package)) != before
    (package / "new.py").write_text("")
    assert resident.fingerprint(str(package)) != before


@pytest.mark.parametrize(
    "argv", [["login"], ["token"], ["credentials", "--serve"], ["devstack", "up"], ["--help"], []]
)
def test_other_commands_never_go_to_the_helper(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STS_BRIDGE_RESIDENT", "1")
    monkeypatch.setenv("STS_BRIDGE_CACHE_DIR", str(tmp_path))
    assert resident.forward(argv) is None
    assert not (tmp_path / "resident").exists()  # and no helper was started for them


def test_off_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STS_BRIDGE_RESIDENT", raising=False)
    monkeypatch.setenv("STS_BRIDGE_CACHE_DIR", str(tmp_path))
    assert resident.forward(["ls"]) is None
    assert not (tmp_path / "resident").exists()


def test_the_helper_s_answers_are_read_strictly() -> None:
    number = resident._number
    assert number(b"pid 4242\n", b"pid ") == 4242
    assert number(b"exit 130\n", b"exit ") == 130
    for junk in (b"pid 12", b"pid x\n", b"exit 0\n", b"", b"pid 1\nexit 0\n"):
        assert number(junk, b"pid ") is None, junk
