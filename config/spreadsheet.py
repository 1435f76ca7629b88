"""CSV cells that a spreadsheet opens as text, never as a formula.

Excel, LibreOffice and Google Sheets run a cell that starts with `=`, `+`,
`-` or `@` (and some a tab or carriage return first) as a formula, so an
evaluator's comment such as `=HYPERLINK(...)` would run on the admin's
machine. Such a text cell gets a leading single quote, which the
spreadsheet shows as text. Numbers, and text that is only a number
("-0.25"), are written as they are.
"""

import re

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def safe_cell(value):
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def safe_row(values):
    """A list row, or a DictWriter's dict row, with every cell made safe."""
    if isinstance(values, dict):
        return {key: safe_cell(value) for key, value in values.items()}
    return [safe_cell(value) for value in values]
