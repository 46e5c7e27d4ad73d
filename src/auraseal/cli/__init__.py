"""The ``auraseal`` command: a thin shell that parses arguments and calls the library.

Each part of the product registers its subcommands from its own module
(``_core``, ``_seal``, ``_ledger``, ``_serve``, ``_fetch``, ``_web``). A
handler returns an exit code or raises an :class:`~auraseal.errors.AuraSealError`,
which is printed as one line on stderr and mapped to its ``exit_code``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from auraseal.cli import (
    _core,
    _fetch,
    _ledger,
    _publish,
    _root,
    _seal,
    _serve,
    _version,
    _web,
    _witness,
)
from auraseal.cli._output import Handler
from auraseal.errors import AuraSealError, NotFoundError, StorageError, UsageError

__all__ = ["build_parser", "commands", "main"]

_MODULES = (_core, _seal, _ledger, _serve, _publish, _fetch, _web, _root, _witness, _version)


class _UsageFailure(UsageError):
    """argparse refused the command line (unknown option, missing argument, ...)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageFailure(message, self.prog)


def _leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below ``parser`` that runs a handler (each command)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for child in action.choices.values():
                if id(child) not in seen:
                    seen.add(id(child))
                    yield from _leaf_parsers(child)
    if parser.get_default("handler") is not None:
        yield parser


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each command's words (``"ledger verify"``) -> its parser."""
    prefix = parser.prog + " "
    return {p.prog.removeprefix(prefix): p for p in _leaf_parsers(parser)}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="auraseal", description="Seal, serve, fetch and verify files.")
    parser.add_argument("--version", action="version", version=f"auraseal {_version.VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in _MODULES:
        module.register(sub)
    for leaf in _leaf_parsers(parser):  # every command takes --json, new ones too
        if "--json" not in leaf._option_string_actions:
            leaf.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _report(exc: AuraSealError, as_json: bool) -> int:
    """The one-line message on stderr (and the JSON error on stdout)."""
    print(f"auraseal: error: {exc}", file=sys.stderr)
    if as_json:
        error = {
            "type": "UsageError" if isinstance(exc, _UsageFailure) else type(exc).__name__,
            "what": exc.what,
            "where": exc.where,
            "exit_code": exc.exit_code,
        }
        print(json.dumps({"ok": False, "error": error}, sort_keys=True))
    return exc.exit_code


def _warn_engines() -> None:
    """The one ``auraseal: warning:`` line when an erasure engine fell back.

    Only if this command loaded the engines (nothing is imported otherwise);
    once per process, since the engines are loaded once.
    """
    erasure = sys.modules.get("auraseal.sealing.erasure")
    found = erasure.loaded_engines() if erasure is not None else None
    if found is not None and found.warning:
        print(f"auraseal: warning: {found.warning}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before parsing succeeds, --json anywhere on the line asks for JSON errors.
    as_json = "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        as_json = bool(getattr(args, "json", as_json))
        handler: Handler = args.handler
        try:
            return handler(args)
        finally:
            _warn_engines()
    except AuraSealError as exc:
        return _report(exc, as_json)
    except KeyboardInterrupt:
        print("auraseal: interrupted", file=sys.stderr)
        return 130
    except FileNotFoundError as exc:
        # A path that does not exist is a bad input (2); other I/O errors are 5.
        where = str(getattr(exc, "filename", None) or "")
        return _report(NotFoundError(exc.strerror or "no such file or directory", where), as_json)
    except OSError as exc:
        where = str(getattr(exc, "filename", None) or "")
        return _report(StorageError(exc.strerror or str(exc), where), as_json)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
