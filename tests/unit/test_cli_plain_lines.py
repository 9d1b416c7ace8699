"""`sts-bridge run`'s parser of plain lines against argparse itself, on generated lines.

For every line of every command `run` runs: where the plain-line parser answers,
its answer is the ``Namespace`` argparse makes; where argparse refuses the line
(or prints help), the plain-line parser declines, so the line goes to argparse
and its own error message. The table test checks that the lines a batch is made
of do take the plain path (else the speed-up is silently gone).
"""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sts_bridge.cli._app import UsageError, command_parser
from sts_bridge.cli._plain_lines import PlainLineParser
from sts_bridge.cli.run_command import BATCH_COMMANDS, _parse_one, plain_line_parser


def _argparse(command: str, words: list[str]) -> argparse.Namespace | str:
    """argparse's answer: the Namespace, or the error message (help: 'exit')."""
    return _answer(command_parser(command), words)


def _answer(parser: argparse.ArgumentParser, words: list[str]) -> argparse.Namespace | str:
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return parser.parse_args(words)
    except UsageError as exc:
        return exc.message
    except SystemExit:
        return "exit"


def _vocabulary(command: str) -> list[str]:
    return _words_for(command_parser(command))


def _words_for(parser: argparse.ArgumentParser) -> list[str]:
    """Words a line may hold: the parser's options whole, cut short and with '=',
    values its types and choices take or refuse, keys and paths, dashes."""
    words = [
        "k.bin", "a b/c.txt", "", "dir/", "x=y", "../up", "10m", "8d", "0", "1h", "900",
        "get", "GET", "put", "Delete", "bogus", "*.tif", "data[1-3", "[a]", "-", "-5",
        "-x", "--x", "--", "workspace://w/f/", "--json=1", "-w", "-r", "7", "12",
    ]  # fmt: skip
    for action in parser._actions:
        for option in action.option_strings:
            words.append(option)
            if option.startswith("--"):
                words += [option[:4], option[:-1], f"{option}=10m", f"{option}=k"]
    return words


def _line(command: str) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(_vocabulary(command)), max_size=7)


@pytest.mark.parametrize("command", BATCH_COMMANDS)
@settings(max_examples=800, deadline=None)
@given(data=st.data())
def test_a_plain_line_parses_as_argparse_parses_it_and_any_other_goes_to_argparse(
    command: str, data: st.DataObject
) -> None:
    words = data.draw(_line(command))
    expected = _argparse(command, words)
    got = PlainLineParser(command_parser(command)).parse(words)
    if got is not None:
        assert isinstance(expected, argparse.Namespace), (words, expected)
        assert vars(got) == vars(expected), words


def _made_up_parser() -> argparse.ArgumentParser:
    """What no command has yet and the plain path still follows: a string default
    its type converts, a '?' positional with one, an append onto a list default,
    store_false and store_const."""
    parser = argparse.ArgumentParser(prog="made-up")
    parser.add_argument("first", type=str.upper)
    parser.add_argument("rest", nargs="?", default="12", type=int)
    parser.add_argument("-n", "--number", type=int, default="7", choices=[7, 12, 900])
    parser.add_argument("--include", action="append", default=["base"])
    parser.add_argument("--json", action="store_false")
    parser.add_argument("-r", action="store_const", const="R", default="none")
    parser.set_defaults(handler="h")
    return parser


@settings(max_examples=800, deadline=None)
@given(data=st.data())
def test_a_made_up_parser_too(data: st.DataObject) -> None:
    parser = _made_up_parser()
    words = data.draw(st.lists(st.sampled_from(_words_for(parser)), max_size=7))
    expected = _answer(parser, words)
    got = PlainLineParser(parser).parse(words)
    if got is not None:
        assert isinstance(expected, argparse.Namespace), (words, expected)
        assert vars(got) == vars(expected), words
    assert parser.get_default("include") == ["base"]  # appends copy the default


def test_the_made_up_parser_takes_the_plain_path() -> None:
    parser = _made_up_parser()
    for words in (["a"], ["a", "900", "--include", "x", "-r", "--json"], ["-n", "12", "k"]):
        got = PlainLineParser(parser).parse(words)
        assert got is not None and vars(got) == vars(parser.parse_args(words)), words
    assert vars(PlainLineParser(parser).parse(["a"])) == {
        "first": "A", "rest": 12, "number": 7, "include": ["base"], "json": True, "r": "none",
        "handler": "h",
    }  # fmt: skip


@pytest.mark.parametrize(
    "line",
    [
        "presign k.bin",
        "presign a.txt b.txt --workspace w --expires-in 10m",
        "presign --expires-in 7d -w w --method put --json k",
        "presign k --method head --method delete",
        "upload a.tif --to results/",
        "upload a b c --to out/ --include *.tif --exclude tmp* --include *.nc -w w",
        "upload a.csv --content-type text/csv --json",
        "download results/a.tif",
        "download results/a.tif out/ -w w",
        "ls",
        "ls -r results/ --json",
        "rm results/a.tif",
        "rm -r -y results/",
        "sync ./data workspace://w/data/ --delete -y --include *.tif",
    ],
)
def test_the_lines_of_a_batch_take_the_plain_path(line: str) -> None:
    command, *words = line.split()
    got = plain_line_parser(command).parse(words)
    assert got is not None, line
    assert vars(got) == vars(command_parser(command).parse_args(words))


@pytest.mark.parametrize(
    "line",
    [
        "presign",  # a key is needed
        "presign k --expires-in",  # a value is needed
        "presign k --method bogus",  # not a choice
        "presign k --exp 10m",  # an abbreviation: argparse takes it, the plain path does not
        "presign k --expires-in=10m",
        "upload a --include data[1-3",  # the type refuses it
        "download a b c",  # one word too many
        "ls a --json b",  # positionals on both sides of an option
        "rm k --frobnicate",
    ],
)
def test_any_other_line_is_parsed_by_argparse_with_its_own_message(line: str) -> None:
    argv = line.split()
    assert plain_line_parser(argv[0]).parse(argv[1:]) is None
    expected = _argparse(argv[0], argv[1:])
    if isinstance(expected, str):
        with pytest.raises(UsageError) as caught:
            _parse_one(argv)
        assert caught.value.message == expected
    else:
        assert vars(_parse_one(argv)).items() >= vars(expected).items()
