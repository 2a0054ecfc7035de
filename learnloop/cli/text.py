"""Terminal-safe text for the command line: one-line messages, quoted values, the `learnloop:` line on
stderr, number formatting and plain tables. Every value a user or a file supplied goes through `one_line`
before it is printed."""

from __future__ import annotations

import math
import sys
import unicodedata

_BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A)) | {0x200E, 0x200F, 0x061C}


def one_line(text) -> str:
    """`text` as a single terminal-safe line: newlines, other control characters (ANSI escapes included),
    Unicode line separators and bidi overrides become visible escapes such as \\n or \\x1b."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if ch == "\t":
            out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Zl", "Zp") or code in _BIDI:
            out.append({"\n": "\\n", "\r": "\\r"}.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"))
        else:
            out.append(ch)
    return "".join(out)


def _q(value) -> str:
    """A user value quoted for a message (escaping happens when the message is printed)."""
    return f"'{value}'"


def _say(message: str) -> None:
    print(f"learnloop: {one_line(message)}", file=sys.stderr, flush=True)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return one_line(v)


def _table(rows: list[list[str]], header: list[str]) -> str:
    rows = [[one_line(x) for x in r] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in out)
