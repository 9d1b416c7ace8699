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


class _SigningWorkspace:
    """A workspace's ``presign_many``: URLs that name key, method and lifetime, every
    call recorded; a call holding a key of ``refused`` fails as expired credentials
    would, and one holding a key of ``clamped`` notes a clamped lifetime."""

    def __init__(self, name: str | None, refused: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.refused = refused
        self.calls: list[list[str]] = []

    def presign_many(
        self, keys: list[str], method: str, seconds: int, *, on_clamp: Any = None
    ) -> list[Any]:
        from datetime import datetime, timezone

        from sts_bridge.errors import CredentialsError
        from sts_bridge.s3.transfer_types import PresignedUrl

        keys = list(keys)
        self.calls.append(keys)
        if self.refused.intersection(keys):
            raise CredentialsError("the storage credentials expire now; cannot sign a URL")
        if seconds > 5 * 60 - 1 and seconds < 10 * 60:  # 5 min asked: 5 s given
            on_clamp(f"presigned URL valid for 5s, not {seconds}s")
        at = datetime(2030, 1, 1, tzinfo=timezone.utc)
        return [
            PresignedUrl(f"https://s3/{self.name}/{k}?m={method}&s={seconds}", method, k, at)
            for k in keys
        ]


def _opener(refused: frozenset[str] = frozenset()) -> tuple[Any, dict[str | None, Any]]:
    workspaces: dict[str | None, _SigningWorkspace] = {}

    def opener(name: str | None) -> Any:
        return workspaces.setdefault(name, _SigningWorkspace(name, refused))

    return opener, workspaces


def _alone(line: BatchLine, opener: Any) -> tuple[str, str, int]:
    """What ``line`` writes run on its own, as `sts-bridge presign` runs it."""
    import io

    from sts_bridge.cli._app import execute
    from sts_bridge.cli.run_command import _line_context

    out, err = io.StringIO(), io.StringIO()
    outcome = execute(line.args, _line_context(out, err, opener, None))
    return out.getvalue(), err.getvalue(), int(outcome.status)


@pytest.mark.parametrize("json_results", [False, True])
def test_consecutive_presigns_are_signed_together_each_line_with_its_own_result(
    json_results: bool,
) -> None:
    from sts_bridge.cli.run_command import PRESIGNS_TOGETHER

    texts = [f"presign k{i}.bin --expires-in 10m" for i in range(2 * PRESIGNS_TOGETHER + 50)]
    texts += [
        "presign two-a two-b --expires-in 10m",  # still the same group: two keys, two URLs
        "presign put.bin --expires-in 10m --method put",
        "presign other.bin -w elsewhere --expires-in 10m",
        "presign short.bin --expires-in 1m",
        "presign clamped-1 --expires-in 5m",
        "presign clamped-2 --expires-in 5m",
        "upload a.txt --to x/",  # not a presign: a task of its own (faked below)
        "presign after.bin --expires-in 10m",
    ]
    lines = parse_lines(texts, json_results=json_results)
    upload = lines[-2]
    lines[-2] = BatchLine(
        upload.number, upload.text, argparse.Namespace(handler=lambda a, c: 0, debug=False)
    )
    opener, workspaces = _opener()
    results: list[LineResult] = []
    run_lines(lines, 4, opener, threading.Event(), results.append)

    calls = sorted((len(c), c[0]) for ws in workspaces.values() for c in ws.calls)
    assert calls == sorted(
        [
            (PRESIGNS_TOGETHER, "k0.bin"),
            (PRESIGNS_TOGETHER, f"k{PRESIGNS_TOGETHER}.bin"),
            (50 + 2, f"k{2 * PRESIGNS_TOGETHER}.bin"),
            (1, "other.bin"),
            (1, "put.bin"),
            (1, "short.bin"),
            (2, "clamped-1"),
            (1, "after.bin"),
        ]
    )
    assert sorted(r.line.number for r in results) == [line.number for line in lines]
    reference_opener, _ = _opener()
    for r in results:
        if r.line is lines[-2]:
            continue
        out, talk, status = _alone(r.line, reference_opener)
        assert (r.out, r.talk, int(r.outcome.status)) == (out, talk, status), r.line.text
    by_number = {r.line.number: r for r in results}
    assert by_number[len(texts) - 7].out.count("/two-") == 2
    # said for each line it concerns
    assert [by_number[len(texts) - n].talk.count("valid for 5s") for n in (4, 3, 2)] == [0, 1, 1]


def test_a_group_of_presigns_that_fails_runs_again_line_by_line() -> None:
    lines = parse_lines([f"presign k{i}" for i in range(5)])
    opener, workspaces = _opener(refused=frozenset({"k3"}))
    results: list[LineResult] = []
    run_lines(lines, 2, opener, threading.Event(), results.append)
    status = {r.line.number: int(r.outcome.status) for r in results}
    assert status == {1: 0, 2: 0, 3: 0, 4: 1, 5: 0}
    assert [len(c) for c in workspaces[None].calls] == [5, 1, 1, 1, 1, 1]
    assert {r.line.number: r.out for r in results}[5] == "https://s3/None/k4?m=GET&s=3600\n"
