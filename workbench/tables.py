"""Listings on the command line: a Rich table on a terminal, and the same rows as CSV or JSON (`--format`).

Rich sizes a console that is not a terminal (a pipe, a CI log) to 80 columns and cuts cells to fit (`yong…`), which
makes logs unreadable; a console here takes `COLUMNS` when set, else a width no row reaches, so a table is as wide
as its content.
"""

from __future__ import annotations

import csv
import enum
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

WIDE = 4096  # wider than any row we print: the table takes its content's width, nothing is cut
HELP_WIDTH = 160  # --help panels are drawn full width, so not WIDE


class Format(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


def piped_width() -> int | None:
    """The width for a console that is not a terminal (None on a terminal: Rich measures it)."""
    if sys.stdout.isatty():
        return None
    try:
        return int(os.environ.get("COLUMNS", "")) or WIDE
    except ValueError:
        return WIDE


def make_console() -> Console:
    return Console(width=piped_width())


def widen_help() -> None:
    """Typer's --help console: full width when piped instead of Rich's 80 columns."""
    if piped_width() is None or os.environ.get("TERMINAL_WIDTH"):
        return
    import typer.rich_utils

    typer.rich_utils.MAX_WIDTH = min(piped_width() or HELP_WIDTH, HELP_WIDTH)


def print_rows(
    console: Console,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: Format | str = Format.table,
    *,
    title: str | None = None,
    style: Callable[[str, Any], str | None] | None = None,
) -> None:
    """`rows` (plain values, one per column) as a Rich table, CSV with a header row, or a JSON list of objects.
    `style(column, value)` colours a table cell; CSV and JSON carry the plain value."""
    fmt = Format(fmt)
    if fmt is Format.json:
        data = [dict(zip(columns, row, strict=True)) for row in rows]
        console.file.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    if fmt is Format.csv:
        writer = csv.writer(console.file, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        return
    table = Table(*columns, title=title)
    for row in rows:
        cells = []
        for col, value in zip(columns, row, strict=True):
            s = style(col, value) if style else None
            cells.append(Text("" if value is None else str(value), style=s or ""))
        table.add_row(*cells)
    console.print(table)
