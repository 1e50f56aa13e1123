"""Options and rendering shared by every command, defined once."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click
from rich.table import Table

from edgetl.console import console, emit_json, set_quiet


def json_option(func: Callable) -> Callable:
    """`--json`: print one JSON object on stdout at the end; human output stays on stderr."""

    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout at the end.")
    @click.option("--quiet", "-q", is_flag=True, help="No progress bars or info lines (warnings still print).")
    @functools.wraps(func)
    def wrapper(*args: Any, as_json: bool, quiet: bool, **kwargs: Any) -> Any:
        set_quiet(quiet)
        result = func(*args, **kwargs)
        if as_json and result is not None:
            emit_json(result)
        return result

    return wrapper


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    grid = Table(title=title, title_justify="left", header_style="bold")
    for index, column in enumerate(columns):
        numeric = all(isinstance(row[index], (int, float)) or row[index] is None for row in rows) and rows
        grid.add_column(column, justify="right" if numeric and index else "left")
    for row in rows:
        grid.add_row(*["-" if cell is None else str(cell) for cell in row])
    console.print(grid)


def percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.1f}%"
