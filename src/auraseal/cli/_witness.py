"""``auraseal witness serve``: a C2SP tlog-witness on 127.0.0.1 (or --host)."""

from __future__ import annotations

import argparse
from pathlib import Path

import platformdirs

from auraseal._extras import require
from auraseal.errors import UsageError
from auraseal.ledger.note import (
    ALG_COSIGNATURE_V1,
    CosignatureSigner,
    NoteVerifier,
    load_note_signer,
    load_note_verifier,
)

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    top = sub.add_parser("witness", help="tlog-witness: cosign consistent checkpoints")
    wsub = top.add_subparsers(dest="witness_command", metavar="SUBCOMMAND",
                              parser_class=type(top))
    wsub.required = True
    p = wsub.add_parser("serve", help="serve POST /add-checkpoint")
    p.add_argument("--key", required=True,
                   help="witness key: PEM private key (named --name) or a PRIVATE+KEY+..."
                        " cosignature key (algorithm 0x04)")
    p.add_argument("--name", default="auraseal-witness", help="witness name (with a PEM key)")
    p.add_argument("--log", action="append", default=[], required=True, metavar="ORIGIN=VKEY",
                   help="a log to witness: its checkpoint origin and note verifier key"
                        " (name+hash+base64, or a file holding one); repeatable")
    p.add_argument("--state", type=Path, help="SQLite state file (default: user data dir)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7380)
    p.add_argument("--print-key", action="store_true",
                   help="print the witness verifier key and exit")
    p.set_defaults(handler=cmd_witness_serve)


def _logs(specs: list[str]) -> dict[str, NoteVerifier]:
    out: dict[str, NoteVerifier] = {}
    for spec in specs:
        origin, sep, key = spec.partition("=")
        if not sep or not origin or not key:
            raise UsageError(f"--log wants ORIGIN=VKEY, got {spec!r}", "--log")
        out[origin] = load_note_verifier(key, origin)
    return out


def cmd_witness_serve(args: argparse.Namespace) -> int:
    signer = load_note_signer(args.key, args.name, ALG_COSIGNATURE_V1)
    if not isinstance(signer, CosignatureSigner):
        raise UsageError("the witness key must be a cosignature/v1 key (algorithm 0x04)",
                         "--key")
    logs = _logs(args.log)
    if args.print_key:
        print(signer.verifier().vkey())
        return 0
    require("server", "witness serve", ("starlette", "anyio", "uvicorn"))
    import uvicorn  # noqa: PLC0415

    from auraseal.witness.server import Witness, witness_app  # noqa: PLC0415

    state = args.state or platformdirs.user_data_path("auraseal") / "witness.sqlite3"
    state.parent.mkdir(parents=True, exist_ok=True)
    witness = Witness(state, signer, logs)
    try:
        uvicorn.run(witness_app(witness), host=args.host, port=args.port, log_level="warning")
    finally:
        witness.close()
    return 0
