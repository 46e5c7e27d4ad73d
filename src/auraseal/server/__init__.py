"""``auraseal serve``: the HTTP server for sealed packages (see ``docs/SERVER.md``)."""

from __future__ import annotations

from auraseal.server.app import create_app
from auraseal.server.config import ServerConfig
from auraseal.server.state import ServerState

__all__ = ["ServerConfig", "ServerState", "create_app"]
