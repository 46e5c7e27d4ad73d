"""The ``auraseal`` command: a thin shell that parses arguments and calls the library.

Each part of the product registers its subcommands from its own module
(``_core``, ``_seal``, ``_ledger``, ``_serve``, ``_fetch``, ``_web``). A
handler returns an exit code or raises an :class:`~auraseal.errors.AuraSealError`,
which is printed as one line on stderr and mapped to its ``exit_code``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NoReturn

from auraseal._extras import extra_of, missing_extra
from auraseal._version import VERSION
from auraseal.errors import AuraSealError, NotFoundError, StorageError, UsageError

if TYPE_CHECKING:
    from auraseal.cli._output import Handler

__all__ = ["build_parser", "commands", "main"]

#: The modules that register commands, in the order ``--help`` lists them.
_MODULES = (
    "_core", "_seal", "_ledger", "_serve", "_publish", "_fetch", "_web", "_root", "_witness",
    "_version",
)

#: Each top-level command: the module that registers it and its help line.
#: ``main`` imports only the module of the command it runs (and none for
#: ``auraseal --help``), so start-up does not load cryptography, httpx, rich,
#: zstandard or the erasure engines; the other commands appear in the parser
#: with this help line only. tests/foundation/test_packaging.py checks that
#: this table matches what the modules register.
COMMANDS: dict[str, tuple[str, str]] = {
    "hash": ("_core", "print a file's integrity string"),
    "check": ("_core", "check a file against an integrity string (exit 0/1/2)"),
    "keygen": ("_core", "create an Ed25519 key pair (KEY, KEY.pub)"),
    "manifest": ("_core", "build or verify a manifest"),
    "resign": (
        "_core",
        "a new manifest version with the same files, a fresh expiry and new signatures",
    ),
    "seal": ("_seal", "seal a directory into a package with Reed-Solomon parts"),
    "unseal": ("_seal", "rebuild every file of a package (directory or zip)"),
    "scrub": ("_seal", "check every file and part (exit 0 intact/1 damaged/4 lost)"),
    "repair": ("_seal", "rebuild missing or corrupt files and parts in place"),
    "inspect": ("_seal", "show a part file's header and footer, or a package summary"),
    "ledger": ("_ledger", "tamper-evident ledger: record, verify, prove"),
    "serve": ("_serve", "serve a directory of sealed packages over HTTP"),
    "nginx-conf": ("_serve", "print an nginx config serving ROOT statically"),
    "publish-token": ("_serve", "create a publish token; append its hash to FILE"),
    "publish": (
        "_publish",
        "upload a sealed package (directory, zip or just its manifest) to a server",
    ),
    "fetch": ("_fetch", "fetch a package: verify, repair from parts, install atomically"),
    "rollback": ("_fetch", "restore the version installed before the last fetch"),
    "html": ("_web", "rewrite a page's integrity attributes so browsers enforce them"),
    "root": ("_root", "create, rotate and co-sign the root of trust"),
    "witness": ("_witness", "tlog-witness: cosign consistent checkpoints"),
    "version": ("_version", "print the version (and the erasure engines in use)"),
}


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


def build_parser(modules: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line (default), or only ``modules``' commands in full
    and every other command as its help line (what :func:`main` uses)."""
    parser = _Parser(prog="auraseal", description="Seal, serve, fetch and verify files.")
    parser.add_argument("--version", action="version", version=f"auraseal {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _MODULES if modules is None else modules:
        importlib.import_module(f"auraseal.cli.{name}").register(sub)
    if modules is not None:
        # The other commands share one placeholder parser (never parsed with:
        # main imports the module of the command on the line), so that
        # ``--help`` does not pay for twenty parsers.
        placeholder: _Parser | None = None
        for word, (_, text) in COMMANDS.items():
            if word in sub.choices:
                continue
            if placeholder is None:
                placeholder = sub.add_parser(word, help=text)
            else:
                sub.choices[word] = placeholder
                sub._choices_actions.append(sub._ChoicesPseudoAction(word, (), text))
    for leaf in _leaf_parsers(parser):  # every command takes --json, new ones too
        if "--json" not in leaf._option_string_actions:
            leaf.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _modules_for(argv: Sequence[str]) -> list[str] | None:
    """The modules to import for ``argv``: the command's own (none for a bare
    ``--help``); None (all of them) for a command the table does not know."""
    word = next((a for a in argv if not a.startswith("-")), None)
    if word is None:
        return []
    if word in COMMANDS:
        return [COMMANDS[word][0]]
    return None


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
    args: argparse.Namespace | None = None
    try:
        args = build_parser(_modules_for(argv)).parse_args(argv)
        as_json = bool(getattr(args, "json", as_json))
        handler: Handler = args.handler
        try:
            return handler(args)
        finally:
            _warn_engines()
    except AuraSealError as exc:
        return _report(exc, as_json)
    except ModuleNotFoundError as exc:
        # a module from an extra that is not installed (auraseal[server], [postgres])
        extra = extra_of(exc.name or "")
        if extra is None:
            raise
        where = str(getattr(args, "command", "") or "auraseal")
        return _report(missing_extra(extra, where, exc.name or ""), as_json)
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
