"""Output helpers for the CLI: JSON vs human text, and rich progress bars."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from auraseal.errors import NotFoundError, UsageError
from auraseal.server.config import check_package_name

Handler = Callable[[argparse.Namespace], int]
Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"

__all__ = [
    "Handler",
    "emit",
    "input_dir",
    "input_path",
    "int_at_least",
    "listen_address",
    "package_name",
    "progress_bar",
    "want_json",
]

# Argument types. They raise AuraSealErrors (not ValueError), which argparse
# lets through, so ``main`` reports them like any other failure: one line,
# ``where: what``, and the family's exit code (a missing input is 2).


def input_path(text: str) -> Path:
    """An input the user names: it must exist (else NotFoundError, exit 2)."""
    path = Path(text)
    if not path.exists():
        raise NotFoundError("no such file or directory", text)
    return path


def key_source(text: str) -> str:
    """A private key the user names: a ``pkcs11:`` URI, or a key file that must exist."""
    if not text.startswith("pkcs11:"):
        input_path(text)
    return text


def input_dir(text: str) -> Path:
    """An input directory the user names (missing or not a directory: exit 2)."""
    path = input_path(text)
    if not path.is_dir():
        raise UsageError("not a directory", text)
    return path


def int_at_least(low: int, flag: str, high: int | None = None) -> Callable[[str], int]:
    """An integer option bounded below (and above), e.g. ``--version`` >= 0."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"not an integer: {text!r}", flag) from None
        if value < low:
            raise UsageError(f"must be >= {low}, got {value}", flag)
        if high is not None and value > high:
            raise UsageError(f"must be <= {high}, got {value}", flag)
        return value

    return parse


def package_name(flag: str) -> Callable[[str], str]:
    """A package name as the server accepts it (no ``/``, no ``..``)."""

    def parse(text: str) -> str:
        if not check_package_name(text):
            raise UsageError(
                f"not a package name: {text!r} (letters, digits, '.', '_', '-'; "
                "no '/' or '..')",
                flag,
            )
        return text

    return parse


_LISTEN = re.compile(r"^(?:(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?([0-9]{1,5})$")


def listen_address(text: str) -> str:
    """nginx ``listen``: PORT, HOST:PORT or [IPv6]:PORT, port 1-65535."""
    m = _LISTEN.match(text)
    if m is None or not 1 <= int(m.group(1)) <= 65535:
        raise UsageError(f"not PORT or ADDRESS:PORT: {text!r}", "--listen")
    return text


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
    args: argparse.Namespace, description: str, total: int | Callable[[], int] | None
) -> Iterator[Callable[[int], None] | None]:
    """Yield a ``advance(nbytes)`` callback that drives a rich bar on a terminal.

    Yields ``None`` (no progress) with ``--json`` or when stderr is not a terminal,
    so scripted output stays quiet. ``total`` may be a function, called only
    when a bar is drawn (so its cost, e.g. a walk of a tree, is not paid otherwise).
    """
    if want_json(args) or not sys.stderr.isatty():
        yield None
        return
    if callable(total):
        total = total()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=Console(stderr=True),  # the bar is not output: stdout stays clean
    ) as prog:
        task = prog.add_task(description, total=total)

        def advance(n: int) -> None:
            prog.advance(task, n)

        yield advance
