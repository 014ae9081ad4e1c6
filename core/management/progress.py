"""A rich progress bar for the cache commands, shown only when stdout is a terminal."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def progress_bar(stdout, description: str, total: int | None):
    """Yields ``advance(n)``. On a terminal it drives a rich bar; in a pipe, a log or a test it
    prints nothing, so output stays plain text."""
    if not getattr(stdout, "isatty", lambda: False)():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=getattr(stdout, "_out", stdout))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
