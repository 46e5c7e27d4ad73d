"""RFC 8785 JSON Canonicalization Scheme (JCS), via the ``rfc8785`` package."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from auraseal.errors import InputError

__all__ = ["canonical_json", "canonical_sha256"]


def canonical_json(obj: Any) -> bytes:
    """Serialize ``obj`` as RFC 8785 canonical JSON (UTF-8 bytes)."""
    try:
        out: bytes = rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InputError(f"cannot canonicalize as JSON: {exc}") from exc
    return out


def canonical_sha256(obj: Any) -> str:
    """Hex SHA-256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()
