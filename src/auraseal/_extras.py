"""Optional parts of the install: ``auraseal[server]`` and ``auraseal[postgres]``.

A plain ``pip install auraseal`` gives the library and the CLI (seal, unseal,
scrub, repair, manifest, fetch, publish, keys, ledger on SQLite/JSONL). The
HTTP server (and the witness server) and PostgreSQL ledgers need an extra; a
command that needs one fails with :class:`~auraseal.errors.MissingExtraError`
(exit 2) naming what to install, never with a traceback.
"""

from __future__ import annotations

import importlib

from auraseal.errors import MissingExtraError

__all__ = ["EXTRAS", "extra_of", "missing_extra", "require"]

#: extra -> the top-level modules the code imports from it
EXTRAS: dict[str, tuple[str, ...]] = {
    "server": ("starlette", "anyio", "uvicorn", "granian"),
    "postgres": ("psycopg",),
}


def extra_of(module: str) -> str | None:
    """The extra that provides the (dotted) ``module``, if any."""
    top = module.partition(".")[0]
    return next((extra for extra, mods in EXTRAS.items() if top in mods), None)


def missing_extra(extra: str, where: str, module: str = "") -> MissingExtraError:
    needs = f" ({module} is not installed)" if module else ""
    return MissingExtraError(
        f"needs the {extra} extra{needs}: pip install 'auraseal[{extra}]'", where
    )


def require(extra: str, where: str, modules: tuple[str, ...] | None = None) -> None:
    """Import ``modules`` (default: all of ``extra``'s) or raise MissingExtraError."""
    for name in EXTRAS[extra] if modules is None else modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise missing_extra(extra, where, name) from None
