"""RAISERROR's printf-style message formatting (``%s``, ``%d``, flags, width, precision)."""

from __future__ import annotations

import re
from decimal import Decimal

from ._errors import SqlError


def as_int(value: object) -> int:
    """An integer argument (0 for anything else)."""
    return int(value) if isinstance(value, int | float | Decimal) else 0


def as_text(value: object) -> str:
    """A message argument as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


_FORMAT = re.compile(r"%([-+0# ]*)(\*|\d+)?(?:\.(\*|\d+))?(?:h|l|I64)?([disuoxX%])?")


def format_message(template: str, args: list[object]) -> str:
    """RAISERROR's printf-style message: %d %i %u %o %x %X %s with flags, width and precision;
    ``%%`` is a percent sign; a missing argument prints ``(null)``."""
    out: list[str] = []
    queue = list(args)
    position = 0

    def take() -> object:
        return queue.pop(0) if queue else None

    for match in _FORMAT.finditer(template):
        out.append(template[position : match.start()])
        position = match.end()
        flags, width_text, precision_text, kind = match.groups()
        if kind is None:
            out.append(match.group(0))
            continue
        if kind == "%":
            out.append("%")
            continue
        width = as_int(take()) if width_text == "*" else int(width_text or 0)
        precision = (
            as_int(take())
            if precision_text == "*"
            else (int(precision_text) if precision_text else None)
        )
        value = take()
        if value is None:
            text = "(null)"
        elif kind == "s":
            if not isinstance(value, str):
                raise SqlError(
                    2786,
                    f"The data type of substitution parameter {len(args) - len(queue)} does not "
                    "match the expected type of the format specification.",
                )
            text = value if precision is None else value[:precision]
        else:
            if isinstance(value, Decimal) and value == value.to_integral_value():
                value = int(value)
            if not isinstance(value, int):
                raise SqlError(
                    2786,
                    f"The data type of substitution parameter {len(args) - len(queue)} does not "
                    "match the expected type of the format specification.",
                )
            number = value if kind in "di" else value & 0xFFFFFFFF
            spec = {"d": "d", "i": "d", "u": "d", "o": "o", "x": "x", "X": "X"}[kind]
            text = format(abs(number), spec)
            if precision is not None:
                text = text.rjust(precision, "0")
            if "#" in flags and kind in "oxX" and number:
                text = {"o": "0", "x": "0x", "X": "0X"}[kind] + text
            sign = "-" if number < 0 else ("+" if "+" in flags else (" " if " " in flags else ""))
            text = sign + text
            if "0" in flags and "-" not in flags and precision is None and len(text) < width:
                text = sign + text[len(sign) :].rjust(width - len(sign), "0")
        text = text.ljust(width) if "-" in flags else text.rjust(width)
        out.append(text)
    out.append(template[position:])
    return "".join(out)
