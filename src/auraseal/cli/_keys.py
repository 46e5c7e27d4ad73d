"""Private keys on the command line: a key file or a PKCS#11 URI, and its PIN.

Every ``--key``/``--sign-with`` of the CLI goes through :func:`load_signers`,
so a token key works wherever a key file does. The PIN comes from
``--pin-file`` or, failing that, ``$AURASEAL_PKCS11_PIN`` (the CLI reads the
environment; the library takes the PIN as an argument).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auraseal.errors import StorageError
from auraseal.signing import PKCS11_SCHEME, Signer, load_signer

__all__ = ["PIN_ENV", "add_pin_args", "load_signers", "read_pin"]

PIN_ENV = "AURASEAL_PKCS11_PIN"


def add_pin_args(p: argparse.ArgumentParser, default: Any = None) -> None:
    """``--pin-file`` and ``--pkcs11-module`` (``default=argparse.SUPPRESS`` for a
    parser whose defaults come from elsewhere, such as ``serve --config``)."""
    p.add_argument(
        "--pin-file", type=Path, default=default,
        help=f"PKCS#11 user PIN for pkcs11: keys (default: ${PIN_ENV})",
    )
    p.add_argument(
        "--pkcs11-module", default=default, metavar="SO",
        help="PKCS#11 library when the URI has no module-path (default: SoftHSM2's)",
    )


def read_pin(args: argparse.Namespace) -> str | None:
    path: Path | None = getattr(args, "pin_file", None)
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise StorageError(f"cannot read PIN file: {exc.strerror}", str(path)) from exc
    return os.environ.get(PIN_ENV) or None  # set but empty: no PIN


def load_signers(args: argparse.Namespace, specs: Sequence[str | Path]) -> list[Signer]:
    """Open each key file or ``pkcs11:`` URI in ``specs``."""
    pin = read_pin(args) if any(str(s).startswith(PKCS11_SCHEME) for s in specs) else None
    module = getattr(args, "pkcs11_module", None)
    return [load_signer(s, pin=pin, module=module) for s in specs]
