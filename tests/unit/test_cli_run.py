"""`sts-bridge run`'s own logic: reading lines, and running them at most
``--jobs`` at a time (commands faked here; the real ones run against the
local platform in tests/integration/test_run_batch.py)."""

from __future__ import annotations

import argparse
import threading
from typing import Any

import pytest

from sts_bridge.cli._context import CommandContext
from sts_bridge.cli.run_command import BadLines, BatchLine, LineResult, parse_lines, run_lines


def test_lines_are_split_like_a_shell_with_comments_and_blanks() -> None:
    lines = parse_lines(
        [
            "# a comment",
            "",
            "   ",
            "presign 'a b/c.txt' d.txt --expires-in 10m  # two keys",
            'upload "my file.txt" --to out/',
            "ls -r results/",
        ]
    )
    assert [(b.number, b.args.command) for b in lines] == [
        (4, "presign"),
        (5, "upload"),
        (6, "ls"),
    ]
    assert lines[0].args.keys == ["a b/c.txt", "d.txt"]
    assert lines[0].args.expires_in == "10m"
    assert lines[1].args.paths == ["my file.txt"]
    assert lines[2].args.recursive is True


def test_every_bad_line_is_named_before_anything_runs() -> None:
    with pytest.raises(BadLines) as caught:
        parse_lines(
            [
                "presign ok.txt",
                "login",  # not a data command
                "upload",  # missing its path
                "presign 'unclosed",
                "download k -",  # stdout is the results' here
                "upload - --to k",  # stdin too
                "rm -r folder/",  # nobody to confirm
                "presign ../escape",
                "presign k --expires-in 8d",
                "ls --help",
                "sync a workspace://w/b/ --delete",
            ]
        )
    assert [n for n, _ in caught.value.problems] == list(range(2, 12))
    assert "'login' is not a command" in caught.value.problems[0][1]
    assert caught.value.message.startswith("line 11: ")


def test_json_results_turn_on_each_commands_own_json() -> None:
    presign, download = parse_lines(["presign k", "download k out.bin"], json_results=True)
    assert presign.args.json is True
    assert not hasattr(download.args, "json")


def _never(name: str | None) -> Any:
    raise AssertionError("no workspace in this test")


def test_lines_run_in_parallel_but_never_more_than_jobs_at_a_time() -> None:
    jobs, total = 3, 9
    cond = threading.Condition()
    state = {"active": 0, "peak": 0, "started": 0}
    gates = [threading.Event() for _ in range(total)]

    def command(args: argparse.Namespace, ctx: CommandContext) -> int:
        with cond:
            state["active"] += 1
            state["started"] += 1
            state["peak"] = max(state["peak"], state["active"])
            cond.notify_all()
        assert gates[args.n].wait(timeout=120)
        ctx.print(f"done {args.n}")
        with cond:
            state["active"] -= 1
        return 0

    lines = [
        BatchLine(i + 1, f"fake {i}", argparse.Namespace(handler=command, debug=False, n=i))
        for i in range(total)
    ]
    results: list[LineResult] = []
    runner = threading.Thread(
        target=lambda: run_lines(lines, jobs, _never, threading.Event(), results.append)
    )
    runner.start()
    try:
        for wave in range(total // jobs):
            wanted = (wave + 1) * jobs
            with cond:
                assert cond.wait_for(lambda n=wanted: state["started"] >= n, timeout=120)
                # a full wave in flight, and the next line waits for a slot
                assert (state["started"], state["active"]) == (wanted, jobs)
            for i in range(wave * jobs, (wave + 1) * jobs):
                gates[i].set()
    finally:
        for gate in gates:
            gate.set()
        runner.join(timeout=120)
    assert state["peak"] == jobs
    assert sorted(r.out for r in results) == sorted(f"done {i}\n" for i in range(total))


def test_a_hash_starts_a_comment_only_at_the_start_of_a_word() -> None:
    from sts_bridge.cli.run_command import split_line

    assert split_line("presign a#b.txt  # the rest") == ["presign", "a#b.txt"]
    assert split_line("rm 'x # y' #gone") == ["rm", "x # y"]
    assert split_line('ls "a\\"#" b') == ["ls", 'a"#', "b"]
    assert split_line("# only a comment") == []
    with pytest.raises(ValueError):
        split_line("presign 'unclosed # not a comment")
