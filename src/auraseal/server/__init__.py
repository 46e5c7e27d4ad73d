"""``auraseal serve``: the HTTP server for sealed packages (see ``docs/SERVER.md``).

The server needs the ``auraseal[server]`` extra (starlette, anyio, uvicorn,
granian). The names below are imported on first use, so that the modules a
plain install also uses (``server.config``, ``server.nginx``) load without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auraseal._lazy import lazy_attribute

if TYPE_CHECKING:
    from auraseal.server.app import create_app
    from auraseal.server.config import ServerConfig
    from auraseal.server.state import ServerState

__all__ = ["ServerConfig", "ServerState", "create_app"]

_LAZY = {
    "ServerConfig": "auraseal.server.config",
    "ServerState": "auraseal.server.state",
    "create_app": "auraseal.server.app",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, globals(), name)
