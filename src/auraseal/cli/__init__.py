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
from collections.abc import Sequence

from auraseal.cli import _core, _fetch, _ledger, _publish, _root, _seal, _serve, _web
from auraseal.cli._output import Handler
from auraseal.errors import AuraSealError

__all__ = ["build_parser", "main"]

_MODULES = (_core, _seal, _ledger, _serve, _publish, _fetch, _web, _root)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"auraseal: usage: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="auraseal", description="Seal, serve, fetch and verify files.")
    parser.add_argument("--version", action="version", version="auraseal 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in _MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except AuraSealError as exc:
        print(f"auraseal: error: {exc}", file=sys.stderr)
        if getattr(args, "json", False):
            error = {
                "type": type(exc).__name__,
                "what": exc.what,
                "where": exc.where,
                "exit_code": exc.exit_code,
            }
            print(json.dumps({"ok": False, "error": error}, sort_keys=True))
        return exc.exit_code
    except KeyboardInterrupt:
        print("auraseal: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        where = getattr(exc, "filename", None) or ""
        print(f"auraseal: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 5


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
