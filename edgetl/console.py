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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

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


def info(message: str) -> None:
    if not _quiet:
        console.print(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}")


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
        task = progress.add_task(description, total=total, status="")

        def advance(n: int = 1, **fields: Any) -> None:
            if fields:  # no fields: the last status stays shown
                progress.update(task, advance=n, status=" ".join(f"{k}={v}" for k, v in fields.items()))
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
