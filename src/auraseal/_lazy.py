"""Names a package re-exports but imports on first use (``auraseal --help``
must not load cryptography, httpx or the server to list the commands)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_attribute"]


def lazy_attribute(
    package: str, table: Mapping[str, str], namespace: MutableMapping[str, Any], name: str
) -> Any:
    """For a package's module ``__getattr__``: ``name`` imported from the module
    ``table`` gives, kept in ``namespace`` so it is imported once."""
    module = table.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    namespace[name] = value
    return value
