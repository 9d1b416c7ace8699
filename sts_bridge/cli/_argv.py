"""What a command line names, read without argparse (the resident helper's
caller decides before anything heavy is imported)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["command_in"]

#: Global options that take a value (the word after them is not the command).
_GLOBAL_OPTIONS_WITH_VALUE = ("--profile",)


def command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not a global option."""
    words = iter(argv)
    for word in words:
        if word in _GLOBAL_OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None
