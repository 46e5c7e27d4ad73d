"""``auraseal ledger record|commit|verify|show|proof|checkpoint|consistency|tiles``.

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
from auraseal.cli._events import env_jsonl, resolve_ledger_url
from auraseal.cli._keys import add_pin_args, load_signers
from auraseal.cli._output import emit, input_path, int_at_least, progress_bar
from auraseal.errors import InputError, StorageError, UsageError
from auraseal.ledger import (
    BlockPolicy,
    Checkpoint,
    Ledger,
    open_ledger,
    verifier_key,
    verify_bundle,
)
from auraseal.ledger.checkpoint import open_checkpoint_note
from auraseal.ledger.note import (
    ALG_COSIGNATURE_V1,
    Ed25519NoteSigner,
    NoteVerifier,
    load_note_signer,
    load_note_verifier,
    read_note_file,
)
from auraseal.ledger.service import sqlite_path
from auraseal.ledger.tilelog import write_tiles
from auraseal.merkle import verify_consistency

__all__ = ["register"]

DEFAULT_KEY_NAME = "auraseal-ledger"
_PUB_HELP = ("log key: a note verifier key name+hash+base64, a file holding one, or a PEM"
             " public key (named --name)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--ledger", metavar="URL",
                        help="sqlite:///path.db or postgresql://... (default $AURASEAL_LEDGER)")
    common.add_argument("--jsonl", type=Path, metavar="PATH",
                        help="JSONL mirror (default $AURASEAL_LEDGER_JSONL when --ledger is"
                             " not given)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--block-entries", type=int_at_least(1, "--block-entries"),
                        default=100, metavar="N",
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
    g.add_argument("--data-file", type=input_path, help="file holding the event data as JSON")
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
    g.add_argument("--data-file", type=input_path)
    p.add_argument("--reconcile", action="store_true",
                   help="append what the JSONL mirror is missing after an interrupted write")
    p.add_argument("--checkpoint", type=input_path, metavar="NOTE",
                   help="also check the tree against this signed checkpoint")
    p.add_argument("--pub", metavar="KEY", help=_PUB_HELP)
    p.add_argument("--name", default=DEFAULT_KEY_NAME, help="checkpoint key name")
    _witness_args(p)
    p.set_defaults(handler=cmd_verify)

    p = lsub.add_parser("show", parents=[common], help="show the head, a block or an entry")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--block", type=int_at_least(0, "--block"), metavar="N")
    g.add_argument("--entry", metavar="ID")
    g.add_argument("--blocks", action="store_true", help="list blocks")
    p.add_argument("--limit", type=int_at_least(0, "--limit"), default=20,
                   help="with --blocks: the last N")
    p.set_defaults(handler=cmd_show)

    p = lsub.add_parser("proof", parents=[common],
                        help="inclusion proof of an entry; --bundle writes an offline bundle")
    p.add_argument("entry_id", nargs="?")
    p.add_argument("--size", type=int_at_least(0, "--size"),
                   help="tree size (default: the whole committed tree)")
    p.add_argument("--bundle", type=Path, metavar="OUT", help="write an offline proof bundle")
    p.add_argument("--key", help="private key to sign the bundle's checkpoint: PEM file, "
                                 "PRIVATE+KEY+... note key, or pkcs11: URI")
    add_pin_args(p)
    p.add_argument("--check", type=input_path, metavar="BUNDLE",
                   help="verify a bundle offline (needs only --pub)")
    p.add_argument("--pub", metavar="KEY", help=_PUB_HELP)
    p.add_argument("--data-file", type=input_path, help="with --check: also check the data")
    p.add_argument("--name", default=DEFAULT_KEY_NAME, help="checkpoint key name")
    _witness_args(p)
    p.set_defaults(handler=cmd_proof)

    p = lsub.add_parser("checkpoint", parents=[common],
                        help="sign a C2SP checkpoint of the tree, or --check one")
    p.add_argument("--key", help="Ed25519 private key (auraseal keygen PEM, a note signer"
                                 " key PRIVATE+KEY+..., a file holding one, or a pkcs11: URI)")
    add_pin_args(p)
    p.add_argument("--name", default=DEFAULT_KEY_NAME, help="key name in the signed note")
    p.add_argument("--size", type=int_at_least(0, "--size"),
                   help="tree size (default: the whole committed tree)")
    p.add_argument("--out", type=Path, help="write the note here")
    p.add_argument("--check", type=input_path, metavar="NOTE", help="verify a note with --pub")
    p.add_argument("--pub", metavar="KEY", help=_PUB_HELP)
    _witness_args(p)
    p.set_defaults(handler=cmd_checkpoint)

    p = lsub.add_parser("tiles", parents=[common],
                        help="write the C2SP tlog-tiles tree (checkpoint + tiles) for a static"
                             " host; only new tiles are written on a rerun")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--key", required=True,
                   help="log key: PEM private key or PRIVATE+KEY+... note signer key")
    p.add_argument("--name", default=DEFAULT_KEY_NAME, help="key name in the signed note")
    p.add_argument("--witness-url", action="append", default=[], metavar="URL",
                   help="submit the checkpoint to this tlog-witness (base URL) and publish"
                        " its cosignature; repeatable")
    p.set_defaults(handler=cmd_tiles)

    p = lsub.add_parser("consistency", parents=[common],
                        help="consistency proof between two checkpoints (or sizes)")
    p.add_argument("old", nargs="?", type=input_path, help="older signed checkpoint")
    p.add_argument("new", nargs="?", type=input_path, help="newer signed checkpoint")
    p.add_argument("--pub", metavar="KEY", help=_PUB_HELP)
    p.add_argument("--name", default=DEFAULT_KEY_NAME)
    p.add_argument("--size1", type=int_at_least(0, "--size1"))
    p.add_argument("--size2", type=int_at_least(0, "--size2"))
    _witness_args(p)
    p.set_defaults(handler=cmd_consistency)


# --- helpers -----------------------------------------------------------------


def _witness_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--witness", action="append", default=[], metavar="VKEY",
                   help="trusted witness cosignature key (name+hash+base64, alg 0x04);"
                        " repeatable")
    p.add_argument("--witness-threshold", type=int, default=None, metavar="K",
                   help="require K valid witness cosignatures (default: all --witness keys)")


def _witnesses(args: argparse.Namespace) -> tuple[list[NoteVerifier], int]:
    keys = [load_note_verifier(w, "witness", ALG_COSIGNATURE_V1) for w in args.witness]
    k = args.witness_threshold
    if k is None:
        k = len(keys)
    if k < 0 or k > len(keys):
        raise UsageError(f"--witness-threshold {k} needs that many --witness keys",
                         "--witness-threshold")
    return keys, k


def _verifier(args: argparse.Namespace) -> NoteVerifier:
    return load_note_verifier(_need(args.pub, "--pub"), args.name)


def _open_cp(args: argparse.Namespace, path: Path) -> Checkpoint:
    """Read a note file as bytes and verify it with --pub and the witness options."""
    witnesses, k = _witnesses(args)
    return open_checkpoint_note(read_note_file(path), _verifier(args), witnesses=witnesses,
                                witness_threshold=k, where=str(path))


def _checkpoint_signer(args: argparse.Namespace) -> tuple[str, Any]:
    """(name, key) that signs checkpoints: a ``pkcs11:`` URI (named --name), else a PEM
    file or a ``PRIVATE+KEY+...`` note key (which carries its own name)."""
    arg = _need(args.key, "--key")
    if str(arg).startswith("pkcs11:"):
        return args.name, load_signers(args, [arg])[0]
    signer = load_note_signer(arg, args.name)
    return signer.name, signer.key


def _open(args: argparse.Namespace, *, must_exist: bool = False) -> Ledger:
    jsonl = args.jsonl
    if jsonl is None and args.ledger is None:
        jsonl = env_jsonl()  # the mirror that goes with $AURASEAL_LEDGER
    if args.block_entries < 1:
        raise UsageError("--block-entries must be at least 1", "--block-entries")
    policy = BlockPolicy(max_entries=args.block_entries,
                         max_age=parse_duration(args.block_age, "--block-age"))
    return open_ledger(resolve_ledger_url(args.ledger), jsonl, policy=policy,
                       must_exist=must_exist)


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
    # verifying reads: a database or mirror that does not exist is an error
    # (exit 5), never an empty ledger created on the spot
    # (--reconcile may write a missing JSONL mirror, never a missing database)
    db = sqlite_path(resolve_ledger_url(args.ledger))
    if db is not None and not db.is_file():
        raise StorageError("no ledger database here (nothing was created)", str(db))
    with _open(args, must_exist=not args.reconcile) as led:
        if args.entry:
            data = _json_arg(args.data, args.data_file, "--data")
            res = led.verify_entry(args.entry, data)
            emit(args, res, f"entry {args.entry}: {'VERIFIED' if res['verified'] else 'FAILED'}"
                            f" (hash {res['hash_valid']}, signature {res['signature_valid']},"
                            f" block {res['block_number']}, included {res['included']})")
            return 0 if res["verified"] else 1
        cp = None
        if (args.witness or args.witness_threshold) and args.checkpoint is None:
            raise UsageError("--witness needs --checkpoint NOTE", "--witness")
        if args.checkpoint is not None:
            cp = _open_cp(args, args.checkpoint)
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
        pub = _verifier(args)
        witnesses, k = _witnesses(args)
        bundle = _json_arg(None, args.check, "bundle")
        if not isinstance(bundle, dict):
            raise InputError("bundle must be a JSON object", str(args.check))
        kwargs: dict[str, Any] = {}
        if args.data_file is not None:
            kwargs["original_data"] = _json_arg(None, args.data_file, "--data-file")
        res = verify_bundle(bundle, pub.name, pub, where=str(args.check), witnesses=witnesses,
                            witness_threshold=k, **kwargs)
        in_block = (f", in block {res['block_number']} (every block field checked)"
                    if res["block_checked"] else "")
        emit(args, res, f"VERIFIED: entry {res['entry_id']} is leaf {res['leaf_index']} of"
                        f" the tree of size {res['tree_size']} signed by {pub.name}{in_block}")
        return 0
    entry_id = _need(args.entry_id, "ENTRY_ID")
    with _open(args) as led:
        proof = led.inclusion(entry_id, args.size)
        proof.verify()
        if args.bundle is not None:
            name, key = _checkpoint_signer(args)
            bundle = led.proof_bundle(entry_id, name, key, proof.tree_size)
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
        cp = _open_cp(args, args.check)
        emit(args, {"origin": cp.origin, "tree_size": cp.size, "root": cp.root.hex(),
                    "verified": True},
             f"VERIFIED: {cp.origin} size {cp.size} root {cp.root.hex()}")
        return 0
    signer = load_note_signer(_need(args.key, "--key"), args.name)
    with _open(args) as led:
        note = led.signed_checkpoint(signer.name, signer.key, args.size)
    if args.out is not None:
        atomic_write_bytes(args.out, note.encode("utf-8"))
    emit(args, {"note": note, "verifier_key": verifier_key(signer.name, signer.key.public),
                "out": str(args.out) if args.out else None}, note.rstrip("\n"))
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    old: Checkpoint | None = None
    new: Checkpoint | None = None
    with _open(args) as led:
        if args.old is not None or args.new is not None:
            old = _open_cp(args, _need(args.old, "OLD"))
            new = _open_cp(args, _need(args.new, "NEW"))
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


def cmd_tiles(args: argparse.Namespace) -> int:
    signer = load_note_signer(args.key, args.name)
    if not isinstance(signer, Ed25519NoteSigner):
        raise UsageError("--key must be an Ed25519 note key (algorithm 0x01)", "--key")
    with _open(args) as led:
        cosigner = None
        if args.witness_url:
            from auraseal.witness.client import ledger_cosigner  # noqa: PLC0415

            cosigner = ledger_cosigner(led, args.witness_url)
        res = write_tiles(led, args.out, signer, cosigner)
    emit(args, {**res, "out": str(args.out), "verifier_key": signer.verifier().vkey()},
         f"tree size {res['tree_size']}: {res['tiles_written']} new tiles written to {args.out}"
         + ("" if res["checkpoint_written"] else " (a newer checkpoint is already there)"))
    return 0
