"""Where output goes: humans read stderr, machines read stdout.

With `--json` a command prints exactly one JSON object on stdout at its end; all
progress bars, tables and warnings go to stderr, so `edgetl ... --json | jq` works
while a person still sees progress. Library code reports through `info`, `warn`
and `progress` and never prints to stdout itself.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, Iterable, Iterator, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

T = TypeVar("T")

# soft_wrap: long lines (paths, warnings) stay whole in logs instead of breaking at 80 columns.
console = Console(stderr=True, highlight=False, soft_wrap=True)
if not console.is_terminal:
    console.width = max(console.width, 140)  # logs and pipes: tables keep their columns
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence progress bars and info lines (warnings still print)."""
    global _quiet
    _quiet = quiet


def printable(text: Any) -> str:
    """`text` with every control or invisible formatting character (ESC, OSC, CR, LF, TAB, NUL, a bidi
    override) written as its Python escape (`\\x1b`, `\\r`, `\\u202e`): a device, a sidecar or a file
    name cannot move the cursor, retitle the terminal, hide a line or fake one."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def printable_lines(text: Any) -> str:
    """`printable` line by line: the line breaks edgetl's own multi-line messages put between named files
    stay breaks (a device's words reach a message as one line: `_last_line`, `errors.first_line`)."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


def plain(text: Any) -> Text:
    """`text` as a Rich `Text`: printed as it is, its `[...]` and `:name:` never read as markup or emoji."""
    return Text(printable(text))


def info(message: Any, heading: str | None = None) -> None:
    """A progress line, printed as plain text; `heading` (edgetl's own words) goes before it in bold."""
    if not _quiet:
        console.print(Text.assemble((heading, "bold"), " ", plain(message)) if heading else plain(message))


def warn(message: Any) -> None:
    console.print(Text.assemble(("warning:", "yellow"), " ", plain(message)))


def emit_json(obj: Any) -> None:
    """The one machine-readable result of a command, on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Any]:
    """A rich progress bar on stderr; yields `advance(n=1, **fields)`."""
    if _quiet or not console.is_terminal:
        # Non-interactive runs (CI, logs, pipes) get no redraw noise.
        yield lambda n=1, **fields: None
        return
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(escape(printable(description)), total=total, status="")

        def advance(n: int = 1, **fields: Any) -> None:
            if fields:  # no fields: the last status stays shown
                status = " ".join(f"{k}={v}" for k, v in fields.items())
                progress.update(task, advance=n, status=escape(printable(status)))
            else:
                progress.update(task, advance=n)

        yield advance


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total) as advance:
        for item in items:
            yield item
            advance()


def say(message: Any) -> None:
    """A result line on stderr (printed even with --quiet), as plain text: see `plain`."""
    console.print(plain(message))
