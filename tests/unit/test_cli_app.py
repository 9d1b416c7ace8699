"""The CLI's top-level options (no command, no network)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sts_bridge


def test_version_prints_the_package_version_and_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sts_bridge", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"sts-bridge {sts_bridge.__version__}"


def test_the_console_script_tunes_the_collector_and_exits_as_usual() -> None:
    # A real process: the exit status, the error line (flushed at exit) and
    # atexit handlers stay as they were; the objects made are frozen first.
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0,\n"
        "                              gc.get_threshold()[0], flush=True))\n"
        "sys.argv = ['sts-bridge', 'no-such-command']\n"
        "from sts_bridge.cli import run\n"
        "run()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("sts-bridge: error: ")
    from sts_bridge.cli import CLI_GC_THRESHOLD

    assert done.stdout.strip() == f"frozen True {CLI_GC_THRESHOLD}"
    assert CLI_GC_THRESHOLD > 700  # Python's default


def test_command_table_names_every_command_of_the_full_parser() -> None:
    from sts_bridge.cli._app import COMMAND_MODULES, build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert set(sub.choices) == set(COMMAND_MODULES)
    for command, module in COMMAND_MODULES.items():
        handler = sub.choices[command].get_default("handler")
        assert handler is not None and handler.__module__ == module, command


def test_command_in_skips_global_options() -> None:
    from sts_bridge.cli._app import command_in

    assert command_in(["-q", "--profile", "upload", "download", "k"]) == "download"
    assert command_in(["--profile=svc", "--debug", "ls"]) == "ls"
    assert command_in(["--version"]) is None
    assert command_in([]) is None


def test_a_named_command_builds_only_its_own_module() -> None:
    code = (
        "import sys\n"
        "from sts_bridge.cli._app import build_parser, command_in\n"
        "build_parser(command_in(['-q', 'download', 'k']))\n"
        "print(sorted(m for m in sys.modules if m.endswith('_commands')),\n"
        "      'shutil' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['sts_bridge.cli.transfer_commands'] False"


def test_help_has_argparse_own_layout_for_the_terminal_width(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    from sts_bridge.cli._app import build_parser

    for columns in ("50", "120"):
        monkeypatch.setenv("COLUMNS", columns)
        fresh = build_parser.__wrapped__("upload")  # not the cached one: it is changed below
        (sub,) = [a for a in fresh._actions if a.dest == "command"]
        upload = sub.choices["upload"]
        ours = upload.format_help()
        upload.formatter_class = argparse.HelpFormatter
        assert ours == upload.format_help()


def test_help_and_unknown_commands_still_list_every_command() -> None:
    for argv, status in ((["--help"], 0), (["frobnicate"], 2)):
        done = subprocess.run(
            [sys.executable, "-m", "sts_bridge", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == status
        text = done.stdout + done.stderr
        for command in ("login", "upload", "sync", "devstack", "credentials"):
            assert command in text, (argv, command)
