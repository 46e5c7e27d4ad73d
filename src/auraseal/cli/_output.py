"""Output helpers for the CLI: JSON vs human text, and rich progress bars."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

Handler = Callable[[argparse.Namespace], int]
Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"

__all__ = ["Handler", "emit", "progress_bar", "want_json"]


def want_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def emit(args: argparse.Namespace, data: Any, text: str | None = None) -> None:
    """Print ``data`` as JSON with ``--json``, else ``text`` (if any)."""
    if want_json(args):
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    elif text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@contextmanager
def progress_bar(
    args: argparse.Namespace, description: str, total: int | None
) -> Iterator[Callable[[int], None] | None]:
    """Yield a ``advance(nbytes)`` callback that drives a rich bar on a terminal.

    Yields ``None`` (no progress) with ``--json`` or when stderr is not a terminal,
    so scripted output stays quiet.
    """
    if want_json(args) or not sys.stderr.isatty():
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as prog:
        task = prog.add_task(description, total=total)

        def advance(n: int) -> None:
            prog.advance(task, n)

        yield advance
