"""The plain lines of ``sts-bridge run`` parsed as argparse parses them, in a tenth of its time.

argparse spends some 20 us on a line like ``presign k.bin --workspace w
--expires-in 10m``: pattern strings, regular expressions, a pass for
defaults. A batch of a thousand presigns pays that a thousand times. A
:class:`PlainLineParser` is built from a sub-command's own parser (its
actions, defaults, types and choices: nothing is written twice) and knows
one plain shape of line: every word that starts with ``-`` is one of the
parser's option strings spelled out, each value is a word that does not
start with ``-``, and the positional words stand together. For such a line
it makes the same ``Namespace`` argparse makes; for any other line (an
abbreviation, ``--opt=value``, ``-5``, a value that its ``type`` or
``choices`` refuse, a missing or extra word, ``-h``) it answers ``None`` and
the caller asks argparse, so every error message is argparse's own.
``tests/unit/test_cli_plain_lines.py`` checks both answers on generated lines.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["PlainLineParser"]

# The argparse actions this parser reproduces (anything else: every line to argparse).
_TAKES_VALUE = (argparse._StoreAction, argparse._AppendAction)
_TAKES_NONE = (argparse._StoreConstAction,)  # store_true / store_false are subclasses
_POSITIONAL_PATTERNS: dict[Any, str] = {None: "(A)", "?": "(A?)", "+": "(A+)"}


class PlainLineParser:
    """Plain lines of one sub-command, parsed as ``parser.parse_args`` parses them
    (see the module docstring); :meth:`parse` answers ``None`` for any other line."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._options: dict[str, argparse.Action] = {}
        self._positionals: list[argparse.Action] = []
        self._usable = not parser._mutually_exclusive_groups
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue  # -h / --help: not in the table, so such a line goes to argparse
            if action.required and action.option_strings:
                self._usable = False
            elif not callable(action.type) and action.type is not None:
                self._usable = False  # a type named by a string: argparse's registry
            elif not action.option_strings:
                if type(action) is not argparse._StoreAction or action.nargs not in (
                    _POSITIONAL_PATTERNS
                ):
                    self._usable = False
                self._positionals.append(action)
            elif (isinstance(action, _TAKES_VALUE) and action.nargs is None) or (
                isinstance(action, _TAKES_NONE) and action.nargs == 0
            ):
                for option in action.option_strings:
                    self._options[option] = action
            else:
                self._usable = False
        self._pattern = re.compile(
            "".join(_POSITIONAL_PATTERNS.get(a.nargs, "") for a in self._positionals)
        )
        # what argparse sets before it reads a word: each action's default, then
        # the parser's own defaults (set_defaults) for the names still unset
        self._start: dict[str, Any] = {}
        for action in parser._actions:
            if action.dest is not argparse.SUPPRESS and action.default is not argparse.SUPPRESS:
                self._start[action.dest] = action.default
        for dest, value in parser._defaults.items():
            self._start.setdefault(dest, value)
        # string defaults: argparse converts those of actions no word named
        self._string_defaults = [
            (a, a.default) for a in parser._actions if isinstance(a.default, str)
        ]

    def parse(self, words: Sequence[str]) -> argparse.Namespace | None:
        """``words`` (after the sub-command) parsed, or ``None``: ask argparse."""
        if not self._usable:
            return None
        ns = argparse.Namespace()
        ns.__dict__.update(self._start)
        seen: set[argparse.Action] = set()
        block: list[str] = []  # the positional words
        block_closed = False
        i, n = 0, len(words)
        try:
            while i < n:
                word = words[i]
                if not word.startswith("-"):
                    if block_closed:
                        return None  # positionals on both sides of an option
                    j = i
                    while j < n and not words[j].startswith("-"):
                        j += 1
                    block = list(words[i:j])
                    block_closed = True
                    i = j
                    continue
                action = self._options.get(word)
                if action is None:
                    return None
                if action.nargs == 0:
                    setattr(ns, action.dest, action.const)
                    i += 1
                else:
                    if i + 1 >= n or words[i + 1].startswith("-"):
                        return None
                    value = _value(action, words[i + 1])
                    if isinstance(action, argparse._AppendAction):
                        items = getattr(ns, action.dest, None)
                        value = [*(items or ()), value]
                    setattr(ns, action.dest, value)
                    i += 2
                seen.add(action)
            # argparse's own rule: each positional's pattern, matched greedily
            match = self._pattern.match("A" * len(block))
            if match is None or match.end() != len(block):
                return None
            start = 0
            for action, group in zip(self._positionals, match.groups(), strict=True):
                taken = block[start : start + len(group)]
                start += len(group)
                if action.nargs == "+":
                    setattr(ns, action.dest, [_value(action, w) for w in taken])
                elif taken:
                    setattr(ns, action.dest, _value(action, taken[0]))
                else:  # an empty '?': its default, converted and checked as argparse does
                    value = action.default
                    if isinstance(value, str):
                        value = _value(action, value)
                    setattr(ns, action.dest, value)
                seen.add(action)
            for action, default in self._string_defaults:
                if action not in seen and getattr(ns, action.dest, None) is default:
                    setattr(ns, action.dest, _converted(action, default))
        except _Refused:
            return None
        return ns


class _Refused(Exception):
    """A value that argparse would refuse (its type or choices): argparse says why."""


def _converted(action: argparse.Action, word: str) -> Any:
    convert: Callable[[str], Any] | None = action.type  # type: ignore[assignment]
    if convert is None:
        return word
    try:
        return convert(word)
    except Exception:
        raise _Refused from None


def _value(action: argparse.Action, word: str) -> Any:
    value = _converted(action, word)
    if action.choices is not None and value not in action.choices:
        raise _Refused
    return value
