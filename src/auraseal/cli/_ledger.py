"""``auraseal ledger record|commit|verify|show|proof|checkpoint|consistency``.

Every subcommand takes ``--ledger URL`` (default ``$AURASEAL_LEDGER``, else a
SQLite ledger in the user's data directory), ``--jsonl PATH`` (default
``$AURASEAL_LEDGER_JSONL``) and ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from auraseal._fs import atomic_write_bytes
from auraseal._time import parse_duration
from auraseal.cli._keys import add_pin_args, load_signers
from auraseal.cli._output import emit, progress_bar
from auraseal.errors import InputError, StorageError, UsageError
from auraseal.ledger import (
    BlockPolicy,
    Checkpoint,
    Ledger,
    open_checkpoint,
    open_ledger,
    resolve_ledger_url,
    verifier_key,
    verify_bundle,
)
from auraseal.ledger.service import env_jsonl
from auraseal.merkle import verify_consistency
from auraseal.signing import load_public_key

__all__ = ["register"]

DEFAULT_KEY_NAME = "auraseal-ledger"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--ledger", metavar="URL",
                        help="sqlite:///path.db or postgresql://... (default $AURASEAL_LEDGER)")
    common.add_argument("--jsonl", type=Path, metavar="PATH",
                        help="JSONL mirror (default $AURASEAL_LEDGER_JSONL when --ledger is"
                             " not given)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--block-entries", type=int, default=100, metavar="N",
                        help="commit a block every N entries (default 100)")
    common.add_argument("--block-age", default="5m", metavar="DURATION",
                        help="... or when the oldest pending entry is this old (default 5m)")

    top = sub.add_parser("ledger", help="tamper-evident ledger: record, verify, prove")
    lsub = top.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND",
                              parser_class=type(top))
    lsub.required = True

    p = lsub.add_parser("record", parents=[common], help="hash and record an event")
    p.add_argument("entry_type")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--data", help="the event data as JSON")
    g.add_argument("--data-file", type=Path, help="file holding the event data as JSON")
    p.add_argument("--metadata", default="{}", help="metadata as a JSON object")
    p.add_argument("--unsigned", action="store_true",
                   help="record without an HMAC (explicitly unsigned)")
    p.add_argument("--commit", action="store_true", help="commit a block right away")
    p.set_defaults(handler=cmd_record)

    p = lsub.add_parser("commit", parents=[common], help="commit pending entries into blocks")
    p.set_defaults(handler=cmd_commit)

    p = lsub.add_parser("verify", parents=[common],
                        help="verify the whole chain (exit 1 on any problem), or one entry")
    p.add_argument("--entry", metavar="ID", help="verify one entry against its data")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--data", help="the entry's original data as JSON")
    g.add_argument("--data-file", type=Path)
    p.add_argument("--reconcile", action="store_true",
                   help="append what the JSONL mirror is missing after an interrupted write")
    p.add_argument("--checkpoint", type=Path, metavar="NOTE",
                   help="also check the tree against this signed checkpoint")
    p.add_argument("--pub", type=Path, help="public key for --checkpoint")
    p.add_argument("--name", default=DEFAULT_KEY_NAME, help="checkpoint key name")
    p.set_defaults(handler=cmd_verify)

    p = lsub.add_parser("show", parents=[common], help="show the head, a block or an entry")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--block", type=int, metavar="N")
    g.add_argument("--entry", metavar="ID")
    g.add_argument("--blocks", action="store_true", help="list blocks")
    p.add_argument("--limit", type=int, default=20, help="with --blocks: the last N")
    p.set_defaults(handler=cmd_show)

    p = lsub.add_parser("proof", parents=[common],
                        help="inclusion proof of an entry; --bundle writes an offline bundle")
    p.add_argument("entry_id", nargs="?")
    p.add_argument("--size", type=int, help="tree size (default: the whole committed tree)")
    p.add_argument("--bundle", type=Path, metavar="OUT", help="write an offline proof bundle")
    p.add_argument("--key", help="Ed25519 private key (file or pkcs11: URI) to sign the "
                   "bundle's checkpoint")
    add_pin_args(p)
    p.add_argument("--check", type=Path, metavar="BUNDLE",
                   help="verify a bundle offline (needs only --pub)")
    p.add_argument("--pub", type=Path, help="public key for --check")
    p.add_argument("--data-file", type=Path, help="with --check: also check the data")
    p.add_argument("--name", default=DEFAULT_KEY_NAME, help="checkpoint key name")
    p.set_defaults(handler=cmd_proof)

    p = lsub.add_parser("checkpoint", parents=[common],
                        help="sign a C2SP checkpoint of the tree, or --check one")
    p.add_argument("--key", help="Ed25519 private key (auraseal keygen) or pkcs11: URI")
    add_pin_args(p)
    p.add_argument("--name", default=DEFAULT_KEY_NAME, help="key name in the signed note")
    p.add_argument("--size", type=int, help="tree size (default: the whole committed tree)")
    p.add_argument("--out", type=Path, help="write the note here")
    p.add_argument("--check", type=Path, metavar="NOTE", help="verify a note with --pub")
    p.add_argument("--pub", type=Path)
    p.set_defaults(handler=cmd_checkpoint)

    p = lsub.add_parser("consistency", parents=[common],
                        help="consistency proof between two checkpoints (or sizes)")
    p.add_argument("old", nargs="?", type=Path, help="older signed checkpoint")
    p.add_argument("new", nargs="?", type=Path, help="newer signed checkpoint")
    p.add_argument("--pub", type=Path, help="public key that signed the checkpoints")
    p.add_argument("--name", default=DEFAULT_KEY_NAME)
    p.add_argument("--size1", type=int)
    p.add_argument("--size2", type=int)
    p.set_defaults(handler=cmd_consistency)


# --- helpers -----------------------------------------------------------------


def _open(args: argparse.Namespace) -> Ledger:
    jsonl = args.jsonl
    if jsonl is None and args.ledger is None:
        jsonl = env_jsonl()  # the mirror that goes with $AURASEAL_LEDGER
    if args.block_entries < 1:
        raise UsageError("--block-entries must be at least 1", "--block-entries")
    policy = BlockPolicy(max_entries=args.block_entries,
                         max_age=parse_duration(args.block_age, "--block-age"))
    return open_ledger(resolve_ledger_url(args.ledger), jsonl, policy=policy)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StorageError(f"cannot read: {exc.strerror}", str(path)) from exc
    except UnicodeDecodeError as exc:
        raise InputError("not UTF-8 text", str(path)) from exc


def _json_arg(text: str | None, path: Path | None, what: str) -> Any:
    if path is not None:
        text, where = _read_text(path), str(path)
    else:
        where = what
    if text is None:
        raise UsageError(f"{what} is required", what)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"not valid JSON: {exc}", where) from exc


def _need(value: Any, flag: str) -> Any:
    if value is None:
        raise UsageError(f"{flag} is required here", flag)
    return value


# --- handlers ----------------------------------------------------------------


def cmd_record(args: argparse.Namespace) -> int:
    data = _json_arg(args.data, args.data_file, "--data")
    meta = _json_arg(args.metadata, None, "--metadata")
    if not isinstance(meta, dict):
        raise InputError("metadata must be a JSON object", "--metadata")
    with _open(args) as led:
        res = led.record(args.entry_type, data, meta, with_signature=not args.unsigned)
        blocks = led.commit() if args.commit else []
    out = res.to_dict()
    out["blocks_committed"] = sorted({*out["blocks_committed"], *(b.block_number for b in blocks)})
    emit(args, out, f"recorded {res.entry_id} ({'signed' if res.signature else 'UNSIGNED'})"
                    f" data_hash {res.data_hash}")
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    with _open(args) as led:
        blocks = led.commit()
    emit(args, {"blocks": [b.to_json() for b in blocks]},
         "\n".join(f"block {b.block_number}: {b.data_count} entries, tree size {b.tree_size},"
                   f" {b.block_hash}" for b in blocks) or "nothing pending")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with _open(args) as led:
        if args.entry:
            data = _json_arg(args.data, args.data_file, "--data")
            res = led.verify_entry(args.entry, data)
            emit(args, res, f"entry {args.entry}: {'VERIFIED' if res['verified'] else 'FAILED'}"
                            f" (hash {res['hash_valid']}, signature {res['signature_valid']},"
                            f" block {res['block_number']}, included {res['included']})")
            return 0 if res["verified"] else 1
        cp = None
        if args.checkpoint is not None:
            pub = load_public_key(_need(args.pub, "--pub"))
            cp = open_checkpoint(_read_text(args.checkpoint), args.name, pub,
                                 where=str(args.checkpoint))
        if args.reconcile:
            fixed = led.reconcile()
            if not args.json:
                sys.stdout.write(f"reconciled JSONL mirror: {fixed}\n")
        head = led.head()
        with progress_bar(args, "verifying", head.tree_size if head else 0) as advance:
            rep = led.verify_chain(checkpoint=cp, progress=advance)
    lines = [
        f"{'OK' if rep.ok else 'TAMPERED'}: {rep.blocks} blocks, {rep.entries} entries,"
        f" {rep.pending} pending, tree root {rep.tree_root}",
        f"signatures {'checked' if rep.signatures_checked else 'NOT checked (no secret)'},"
        f" JSONL {'checked' if rep.jsonl_checked else 'not configured'}",
    ]
    if not rep.ok:
        lines.append(f"first bad block: {rep.first_bad_block}")
        lines += [f"  {p}" for p in rep.problems[:20]]
        if rep.reconcilable:
            lines.append("only the JSONL mirror is behind: run verify --reconcile")
    emit(args, rep.to_dict(), "\n".join(lines))
    return 0 if rep.ok else 1


def cmd_show(args: argparse.Namespace) -> int:
    with _open(args) as led:
        if args.block is not None:
            b = led.block(args.block)
            emit(args, b.to_json(), json.dumps(b.to_json(), indent=2))
            return 0
        if args.entry:
            e = led.entry(args.entry)
            d = {**e.to_json(), "block_number": e.block_number, "leaf_index": e.leaf_index}
            emit(args, d, json.dumps(d, indent=2))
            return 0
        if args.blocks:
            blocks = list(led.blocks())[-max(args.limit, 0):] if args.limit else []
            emit(args, [b.to_json() for b in blocks],
                 "\n".join(f"{b.block_number:>6} {b.timestamp} {b.data_count:>4} entries"
                           f" size {b.tree_size} {b.block_hash}" for b in blocks) or "no blocks")
            return 0
        head = led.head()
        pending = len(led.pending())
        d = {"ledger": led.store.url, "origin": led.origin,
             "head": head.to_json() if head else None, "pending": pending}
    text = (f"ledger {d['ledger']} (origin {d['origin']})\n"
            + (f"head: block {head.block_number}, tree size {head.tree_size},"
               f" root {head.tree_root}\n" if head else "no blocks yet\n")
            + f"pending entries: {pending}")
    emit(args, d, text)
    return 0


def cmd_proof(args: argparse.Namespace) -> int:
    if args.check is not None:
        pub = load_public_key(_need(args.pub, "--pub"))
        bundle = _json_arg(None, args.check, "bundle")
        if not isinstance(bundle, dict):
            raise InputError("bundle must be a JSON object", str(args.check))
        kwargs: dict[str, Any] = {}
        if args.data_file is not None:
            kwargs["original_data"] = _json_arg(None, args.data_file, "--data-file")
        res = verify_bundle(bundle, args.name, pub, where=str(args.check), **kwargs)
        in_block = (f", in block {res['block_number']} (every block field checked)"
                    if res["block_checked"] else "")
        emit(args, res, f"VERIFIED: entry {res['entry_id']} is leaf {res['leaf_index']} of"
                        f" the tree of size {res['tree_size']} signed by {args.name}{in_block}")
        return 0
    entry_id = _need(args.entry_id, "ENTRY_ID")
    with _open(args) as led:
        proof = led.inclusion(entry_id, args.size)
        proof.verify()
        if args.bundle is not None:
            key = load_signers(args, [_need(args.key, "--key")])[0]
            bundle = led.proof_bundle(entry_id, args.name, key, proof.tree_size)
            atomic_write_bytes(args.bundle, (json.dumps(bundle, indent=2) + "\n").encode())
    d = proof.to_dict()
    text = (f"entry {entry_id}: leaf {proof.leaf_index} of {proof.tree_size},"
            f" root {proof.root.hex()}\n" + "\n".join(f"  {p.hex()}" for p in proof.proof))
    if args.bundle is not None:
        d["bundle"] = str(args.bundle)
        text += f"\nbundle written to {args.bundle}"
    emit(args, d, text)
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    if args.check is not None:
        pub = load_public_key(_need(args.pub, "--pub"))
        cp = open_checkpoint(_read_text(args.check), args.name, pub, where=str(args.check))
        emit(args, {"origin": cp.origin, "tree_size": cp.size, "root": cp.root.hex(),
                    "verified": True},
             f"VERIFIED: {cp.origin} size {cp.size} root {cp.root.hex()}")
        return 0
    key = load_signers(args, [_need(args.key, "--key")])[0]
    with _open(args) as led:
        note = led.signed_checkpoint(args.name, key, args.size)
    if args.out is not None:
        atomic_write_bytes(args.out, note.encode("utf-8"))
    emit(args, {"note": note, "verifier_key": verifier_key(args.name, key.public),
                "out": str(args.out) if args.out else None}, note.rstrip("\n"))
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    old: Checkpoint | None = None
    new: Checkpoint | None = None
    with _open(args) as led:
        if args.old is not None or args.new is not None:
            pub = load_public_key(_need(args.pub, "--pub"))
            old = open_checkpoint(_read_text(_need(args.old, "OLD")), args.name, pub,
                                  where=str(args.old))
            new = open_checkpoint(_read_text(_need(args.new, "NEW")), args.name, pub,
                                  where=str(args.new))
            size1, size2 = old.size, new.size
        else:
            size1, size2 = _need(args.size1, "--size1"), args.size2
            if size2 is None:
                head = led.head()
                size2 = head.tree_size if head else 0
        proof, root1, root2 = led.consistency(size1, size2)
    verify_consistency(size1, size2, proof, old.root if old else root1,
                       new.root if new else root2)
    emit(args, {"size1": size1, "size2": size2, "root1": root1.hex(), "root2": root2.hex(),
                "proof": [p.hex() for p in proof], "verified": True},
         f"CONSISTENT: tree {size1} is a prefix of tree {size2} ({len(proof)} hashes)")
    return 0
