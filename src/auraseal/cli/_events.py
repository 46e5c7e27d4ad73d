"""Which ledger the CLI writes to, and the event sink it hands the library.

The library never looks at the environment or a config file to decide to
write a ledger (:mod:`auraseal.events`); this module does, for the CLI:

- the ledger URL: ``--ledger``, else ``$AURASEAL_LEDGER``, else the config
  file's ``[ledger] url`` (config file: ``$AURASEAL_CONFIG``, else
  ``<user config dir>/auraseal/config.toml``);
- its JSONL mirror: ``--jsonl``, else ``$AURASEAL_LEDGER_JSONL``, else (when
  ``$AURASEAL_LEDGER`` is not set) the config file's ``[ledger] jsonl``.

:func:`event_sink` builds the sink seal, repair, fetch and ``manifest verify``
report to: it records into that ledger (HMAC-signed when
``INTEGRITY_HMAC_SECRET`` is set, explicitly unsigned otherwise) and never
fails the command: the first failure is printed as one warning and the
remaining events are dropped.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import platformdirs

from auraseal.errors import AuraSealError, ConfigError

__all__ = [
    "CONFIG_ENV",
    "LEDGER_ENV",
    "LEDGER_JSONL_ENV",
    "LedgerSink",
    "config_ledger",
    "config_path",
    "configured_ledger_url",
    "env_jsonl",
    "event_sink",
    "resolve_ledger_url",
]

LEDGER_ENV = "AURASEAL_LEDGER"
LEDGER_JSONL_ENV = "AURASEAL_LEDGER_JSONL"
CONFIG_ENV = "AURASEAL_CONFIG"


def config_path() -> Path:
    """``$AURASEAL_CONFIG``, else ``<user config dir>/auraseal/config.toml``."""
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else platformdirs.user_config_path("auraseal") / "config.toml"


def config_ledger() -> dict[str, str]:
    """The ``[ledger]`` table (``url``, ``jsonl``) of the config file, if any."""
    path = config_path()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"unreadable config file: {exc}", str(path)) from exc
    table = doc.get("ledger", {})
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ConfigError("[ledger] must hold string values (url, jsonl)", str(path))
    return {k: v for k, v in table.items() if k in ("url", "jsonl")}


def configured_ledger_url() -> str | None:
    """``$AURASEAL_LEDGER``, else the config file's ``[ledger] url``, else None."""
    return os.environ.get(LEDGER_ENV) or config_ledger().get("url")


def resolve_ledger_url(explicit: str | None = None) -> str:
    """``explicit``, else ``$AURASEAL_LEDGER``, else the config file's
    ``[ledger] url``, else :func:`~auraseal.ledger.default_ledger_url`."""
    from auraseal.ledger import default_ledger_url  # noqa: PLC0415 - lazy: startup time

    return explicit or configured_ledger_url() or default_ledger_url()


def env_jsonl() -> Path | None:
    """``$AURASEAL_LEDGER_JSONL`` (else the config file's ``[ledger] jsonl``) -- the
    mirror of the configured ledger."""
    value = os.environ.get(LEDGER_JSONL_ENV)
    if not value and not os.environ.get(LEDGER_ENV):
        value = config_ledger().get("jsonl")
    return Path(value) if value else None


class LedgerSink:
    """An :class:`~auraseal.events.EventSink` that records into one ledger.

    The ledger is opened at the first event and closed by :meth:`close`. A
    failure (opening, recording) is printed once as a warning on stderr and
    turns the sink off: a ledger never fails the command that reports to it.
    """

    def __init__(
        self, url: str, jsonl: Path | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        self.url = url
        self.jsonl = jsonl
        self.metadata = metadata
        self.failed: str | None = None
        self._ledger: Any = None

    def record(self, entry_type: str, data: dict[str, Any]) -> None:
        if self.failed is not None:
            return
        try:
            if self._ledger is None:
                from auraseal.ledger import open_ledger  # noqa: PLC0415 - lazy: startup time

                self._ledger = open_ledger(self.url, self.jsonl)
            self._ledger.record(
                entry_type, data, self.metadata, with_signature=self._ledger.signs
            )
        except (AuraSealError, OSError) as exc:
            self.failed = f"{entry_type} not recorded: {exc}"
            print(f"auraseal: warning: ledger: {self.failed}", file=sys.stderr)

    def close(self) -> None:
        led, self._ledger = self._ledger, None
        if led is not None:
            try:
                led.close()
            except (AuraSealError, OSError) as exc:
                print(f"auraseal: warning: ledger: {exc}", file=sys.stderr)


@contextlib.contextmanager
def event_sink(
    explicit: str | None = None, *, metadata: dict[str, Any] | None = None
) -> Iterator[LedgerSink | None]:
    """The sink for one command: None when no ledger is configured (``explicit``
    URL, ``$AURASEAL_LEDGER``, config file), else a :class:`LedgerSink`."""
    try:
        url = explicit or configured_ledger_url()
        jsonl = None if explicit else env_jsonl()
    except ConfigError as exc:  # a broken config file must not fail a seal either
        print(f"auraseal: warning: ledger: {exc}", file=sys.stderr)
        url = None
    if not url:
        yield None
        return
    sink = LedgerSink(url, jsonl, metadata)
    try:
        yield sink
    finally:
        sink.close()
