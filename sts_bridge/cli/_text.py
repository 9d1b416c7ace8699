"""Text from the store made safe for a terminal or a line-oriented pipe."""

from __future__ import annotations

__all__ = ["printable"]

# Backslash is escaped too, so that an escaped key cannot be confused with a
# key that holds the escape sequence itself.
_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str, *, backslash: bool = True) -> str:
    """``text`` with every non-printable character escaped (``\\n``, ``\\x1b``, ``\\u2028``).

    Object keys are written by other tools and by other members of a
    shared workspace: a key holding terminal escapes or a newline must
    neither recolour the terminal nor forge a line of a listing.
    ``backslash=False`` leaves backslashes alone, for text that is read,
    not parsed (messages already quote keys with ``repr``).
    """
    if text.isprintable() and (not backslash or "\\" not in text):
        return text
    out = []
    for char in text:
        if char == "\\" and not backslash:
            out.append(char)
        elif char in _SHORT:
            out.append(_SHORT[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)
