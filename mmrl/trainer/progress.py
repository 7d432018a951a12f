"""Rich progress bars for long phases (warm-up, RL steps, evaluation), silent when disabled or not on a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


class Progress:
    """``with progress.task("RL", total) as advance: advance("reward 0.5")`` shows a bar with a status line."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    @contextmanager
    def task(self, name: str, total: int, completed: int = 0) -> Iterator[Callable[[str], None]]:
        if not self.enabled:
            yield lambda status="": None
            return
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[status]}"))  # fmt: skip
        with RichProgress(*columns, transient=False) as bar:
            tid = bar.add_task(name, total=total, completed=completed, status="")

            def advance(status: str = "") -> None:
                bar.update(tid, advance=1, status=status)

            yield advance
