"""Make data safe to show in a terminal.

Patron data comes from CSV files and other people's systems: a name may hold
`[bold]`, an ANSI escape, an OSC title change or a bidi override. The console
shows data as text, never as markup, and control and invisible formatting
characters as visible placeholders so nothing reaches the terminal raw.
"""

from __future__ import annotations

import re

# C0 controls -> the Unicode control pictures (ESC shows as ␛), DEL -> ␡
_C0 = {i: chr(0x2400 + i) for i in range(0x20)}
_C0[0x7F] = "\u2421"

# characters that are invisible or reorder text: shown as <U+XXXX>
_INVISIBLE = (
    [*range(0x80, 0xA0)]  # C1 controls (0x9B is a CSI on some terminals)
    + [0x061C, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2028, 0x2029, 0xFEFF]
    + [*range(0x202A, 0x202F)]  # LRE RLE PDF LRO RLO
    + [*range(0x2066, 0x206A)]  # LRI RLI FSI PDI
)
_TABLE = {**_C0, **{cp: f"<U+{cp:04X}>" for cp in _INVISIBLE}}
_NEEDS = re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(_TABLE)) + "]")


def visible(value: object) -> str:
    """`value` as a single-line string with every control character made visible."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if _NEEDS.search(text) is None:
        return text
    return text.translate(_TABLE)
