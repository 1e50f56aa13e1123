"""Options and rendering shared by every command, defined once.

`--json` and `--quiet`, `--threads` and `--max-drop` mean the same thing, take the same values and
read the same help in every command that has them; a renamed option keeps its old spelling as a
hidden alias that still works and says what to use instead.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Callable, NoReturn

import click
from rich.table import Table

from edgetl.console import console, emit_json, plain, set_quiet, warn
from edgetl.errors import BadInputError, EdgetlError

QUIET_HELP = "No progress bars or info lines (warnings still print)."


def fail(error: EdgetlError, result: Any) -> NoReturn:
    """Raise `error` carrying what the command did: `--json` prints it before the exit code says it failed."""
    error.result = result
    raise error


def json_option(func: Callable | None = None, *, lines: bool = False) -> Callable:
    """`--json` and `--quiet/-q`: the command's returned result is printed as one JSON object on stdout at
    the end (human output stays on stderr); an EdgetlError raised through `fail` prints its result
    first, then exits with the error's code, the same way for every command.

    `lines=True` (run): `--json-lines`, also spelled `--json`, one compact object per line; the command
    streams its own lines and receives `json_lines` to know it should."""

    if lines:
        flag = click.option("--json-lines", "--json", "as_json", is_flag=True,
                            help="One JSON object per frame on stdout, then a summary line.")
    else:
        flag = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout at the end.")

    def decorate(command: Callable) -> Callable:
        @flag
        @click.option("--quiet", "-q", is_flag=True, help=QUIET_HELP)
        @functools.wraps(command)
        def wrapper(*args: Any, as_json: bool, quiet: bool, **kwargs: Any) -> Any:
            set_quiet(quiet)
            try:
                result = command(*args, **kwargs, **({"json_lines": as_json} if lines else {}))
            except EdgetlError as error:
                if as_json and getattr(error, "result", None) is not None:
                    _emit(error.result, lines)
                raise
            if as_json and result is not None:
                _emit(result, lines)
            return result

        return wrapper

    return decorate(func) if func is not None else decorate


def _emit(result: Any, lines: bool) -> None:
    if lines:
        click.echo(json.dumps(result, default=str))
    else:
        emit_json(result)


class CountType(click.ParamType):
    """A whole number >= 1; with `sweep`, a comma-separated list of them (1,2,4); with `best`, also 'best'."""

    name = "count"

    def __init__(self, sweep: bool = False, best: bool = False):
        self.sweep, self.best = sweep, best

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "N[,N...]" if self.sweep else ("N|best" if self.best else "N")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, list)) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        if self.best and text.lower() == "best":
            return "best"
        parts = [part.strip() for part in text.split(",") if part.strip()] if self.sweep else [text]
        if not parts or not all(re.fullmatch("[0-9]+", part) and int(part) >= 1 for part in parts):
            expected = "a whole number >= 1" + (", or a list like 1,2,4" if self.sweep else "")
            self.fail(f"{value!r} is not {expected}{' or best' if self.best else ''}", param, ctx)
        counts = list(dict.fromkeys(int(part) for part in parts))
        return counts if self.sweep else counts[0]


def threads_option(default: str = "the physical cores available", *, sweep: bool = False, best: bool = False,
                   note: str = "") -> Callable:
    """`--threads`: the runtime's inference threads, worded the same in every command."""
    forms = "N >= 1" + (", or a sweep like 1,2,4" if sweep else "") + (
        ", or 'best': the fastest of the self-test's thread sweep on each device" if best else "")
    return click.option("--threads", type=CountType(sweep=sweep, best=best),
                        help=f"Inference threads: {forms} (default: {default}).{' ' + note if note else ''}")


class DropType(click.ParamType):
    """Percentage points of top-1 accuracy (a number >= 0), or 'none'/'off' for no bound (None)."""

    name = "pp|none"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "PP|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | None:
        if value is None or isinstance(value, float):
            return value
        if str(value).strip().lower() in ("none", "off"):
            return None
        try:
            drop = float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number of percentage points or 'none'", param, ctx)
        if not drop >= 0:
            self.fail("must be >= 0 percentage points, or 'none'", param, ctx)
        return drop


def max_drop_option(help: str, default: float = 1.0, none_means: str = "no bound") -> Callable:
    """`--max-drop PP|none`: the largest top-1 drop in percentage points, or 'none' (None)."""
    return click.option("--max-drop", type=DropType(), default=str(default), show_default=True,
                        help=f"{help} 'none': {none_means}.")


def renamed_option(old: str, new: str, dest: str) -> Callable:
    """`old`, hidden, as the former spelling of `new` (whose value lands in `dest`): it still works and
    says, in one line on stderr, to use `new`."""
    alias = f"{dest}_alias"

    def decorate(command: Callable) -> Callable:
        @click.option(old, alias, hidden=True, help=f"Former name of {new}.")
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            value = kwargs.pop(alias)
            if value is not None:
                warn(f"`{click.get_current_context().info_name} {old}` is now {new}: use {new} {value}")
                if kwargs.get(dest) not in (None, value):
                    raise BadInputError(f"{old} {value} and {new} {kwargs[dest]} disagree: give {new} only")
                kwargs[dest] = value
            return command(*args, **kwargs)

        return wrapper

    return decorate


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A table on stderr; the title and every cell are plain text (`console.plain`): cells hold what devices,
    sidecars and file names said, which must neither be read as markup nor reach the terminal as escapes."""
    grid = Table(title=plain(title), title_justify="left", header_style="bold")
    for index, column in enumerate(columns):
        numeric = all(isinstance(row[index], (int, float)) or row[index] is None for row in rows) and rows
        grid.add_column(column, justify="right" if numeric and index else "left")
    for row in rows:
        grid.add_row(*[plain("-" if cell is None else cell) for cell in row])
    console.print(grid)


def percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.1f}%"
