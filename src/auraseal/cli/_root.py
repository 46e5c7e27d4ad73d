"""``auraseal root init|rotate|sign|status|pubkey``: the signed root of trust (docs/KEYS.md)."""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from pathlib import Path

from auraseal._fs import atomic_write_bytes
from auraseal._time import parse_duration
from auraseal.cli._keys import add_pin_args, load_signers
from auraseal.cli._output import emit, input_path
from auraseal.errors import StorageError, ThresholdError, UsageError
from auraseal.root import (
    Root,
    RootStatus,
    add_signatures,
    parse_root,
    root_status,
    sign_root,
)
from auraseal.signing import PublicKey, Signer, load_public_key

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("root", help="create, rotate and co-sign the root of trust").add_subparsers(
        dest="root_command", metavar="ACTION"
    )
    r.required = True

    i = r.add_parser("init", help="write root version 1, signed by --key")
    i.add_argument("-o", "--output", type=Path, required=True)
    i.add_argument("--key", action="append", default=[], required=True, metavar="KEY",
                   help="release key: a private key file or pkcs11: URI; it signs (repeat)")
    i.add_argument("--add-key", type=input_path, action="append", default=[], metavar="PUB",
                   help="release key held by someone else (public key; signs later)")
    i.add_argument("--threshold", type=int, default=1, help="release signatures required")
    _timestamp_args(i)
    i.add_argument("--expires", default="1y", help="validity, e.g. 180d, 1y, or 'never'")
    add_pin_args(i)
    i.add_argument("--json", action="store_true")
    i.set_defaults(handler=cmd_init)

    o = r.add_parser("rotate", help="write the next root version (keys added/removed)")
    o.add_argument("root", type=input_path, help="the current root")
    o.add_argument("-o", "--output", type=Path, required=True)
    o.add_argument("--sign-with", action="append", default=[], metavar="KEY",
                   help="private key file or pkcs11: URI signing the new root (repeat)")
    o.add_argument("--add-key", type=input_path, action="append", default=[], metavar="PUB")
    o.add_argument("--remove-key", type=input_path, action="append", default=[], metavar="PUB")
    o.add_argument("--threshold", type=int, default=None, help="new release threshold")
    _timestamp_args(o)
    o.add_argument("--remove-timestamp-key", type=input_path, action="append", default=[],
                   metavar="PUB")
    o.add_argument("--expires", default="1y", help="validity from now, or 'never'")
    add_pin_args(o)
    o.add_argument("--json", action="store_true")
    o.set_defaults(handler=cmd_rotate)

    s = r.add_parser("sign", help="add one signer's signature to a (draft) root")
    s.add_argument("root", type=input_path)
    s.add_argument("--key", action="append", default=[], required=True, metavar="KEY")
    s.add_argument("--previous", type=input_path, default=None,
                   help="the root before it (to report whether its threshold is met)")
    s.add_argument("-o", "--output", type=Path, help="default: in place")
    add_pin_args(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_sign)

    t = r.add_parser("status", help="is a root complete or still a draft (exit 3 if draft)")
    t.add_argument("root", type=input_path)
    t.add_argument("--previous", type=input_path, default=None)
    t.add_argument("--json", action="store_true")
    t.set_defaults(handler=cmd_status)

    n = r.add_parser(
        "install",
        help="store a root where a server serves it: a local ROOT, or upload to a server URL",
    )
    n.add_argument("root", type=input_path)
    n.add_argument("--to", required=True, metavar="SERVE_ROOT|URL",
                   help="the server's ROOT directory, or its http(s):// URL (PUT "
                   "/packages/<name>/root; token from --token-file or $AURASEAL_TOKEN)")
    n.add_argument("--package", default=None,
                   help="for this package only (default: all; required with a URL)")
    n.add_argument("--token-file", type=input_path, metavar="F")
    n.add_argument("--json", action="store_true")
    n.set_defaults(handler=cmd_install)

    p = r.add_parser("pubkey", help="write the public key of a key file or pkcs11: URI")
    p.add_argument("key", metavar="KEY")
    p.add_argument("-o", "--output", type=Path, required=True)
    add_pin_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_pubkey)


def _timestamp_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timestamp-key", type=input_path, action="append", default=[], metavar="PUB",
                   help="online key allowed to sign timestamp.json (repeat)")
    p.add_argument("--timestamp-threshold", type=int, default=None)


def _expires(text: str) -> timedelta | None:
    return None if text == "never" else parse_duration(text, "--expires")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read: {exc.strerror}", str(path)) from exc


def _status_text(st: RootStatus) -> str:
    own = f"{st.own_signed}/{st.own_needed} of its own release keys"
    prev = (
        ""
        if st.previous_needed is None
        else f", {st.previous_signed}/{st.previous_needed} of the previous root's"
    )
    state = "complete" if st.complete else "DRAFT (clients refuse it until signed)"
    return f"root v{st.version}: {own}{prev}: {state}"


def _status_dict(st: RootStatus, out: Path) -> dict[str, object]:
    return {
        "root": str(out),
        "version": st.version,
        "complete": st.complete,
        "own_signed": st.own_signed,
        "own_needed": st.own_needed,
        "previous_signed": st.previous_signed,
        "previous_needed": st.previous_needed,
    }


def _write_root(args: argparse.Namespace, out: Path, data: bytes, prev: Root | None) -> int:
    """Write a (possibly draft) root atomically and say how far it is signed."""
    st = root_status(data, prev, str(out))
    atomic_write_bytes(out, data)
    emit(args, _status_dict(st, out), f"wrote {out}: {_status_text(st)}")
    return 0


def _publics(paths: list[Path]) -> list[PublicKey]:
    return [load_public_key(p) for p in paths]


def cmd_init(args: argparse.Namespace) -> int:
    signers = load_signers(args, args.key)
    release = [s.public for s in signers] + _publics(args.add_key)
    ts = _publics(args.timestamp_key)
    root = Root.new(
        release,
        args.threshold,
        timestamp=ts,
        timestamp_threshold=args.timestamp_threshold or 1,
        expires=_expires(args.expires),
    )
    return _write_root(args, args.output, sign_root(root, signers), None)


def cmd_rotate(args: argparse.Namespace) -> int:
    old, _doc = parse_root(_read(args.root), str(args.root))
    signers: list[Signer] = load_signers(args, args.sign_with)
    new = old.rotated(
        add=_publics(args.add_key),
        remove=_publics(args.remove_key),
        threshold=args.threshold,
        add_timestamp=_publics(args.timestamp_key),
        remove_timestamp=_publics(args.remove_timestamp_key),
        timestamp_threshold=args.timestamp_threshold,
        expires=_expires(args.expires),
    )
    return _write_root(args, args.output, sign_root(new, signers), old)


def cmd_sign(args: argparse.Namespace) -> int:
    data = _read(args.root)
    signers = load_signers(args, args.key)
    out: Path = args.output or args.root
    signed = add_signatures(data, signers, str(args.root))
    prev = parse_root(_read(args.previous), str(args.previous))[0] if args.previous else None
    return _write_root(args, out, signed, prev)


def cmd_status(args: argparse.Namespace) -> int:
    data = _read(args.root)
    prev = parse_root(_read(args.previous), str(args.previous))[0] if args.previous else None
    st = root_status(data, prev, str(args.root))
    emit(args, _status_dict(st, args.root), _status_text(st))
    if not st.complete:
        return ThresholdError.exit_code
    return 0


def cmd_pubkey(args: argparse.Namespace) -> int:
    signer = load_signers(args, [args.key])[0]
    atomic_write_bytes(args.output, signer.public.pem(), mode=0o644)
    emit(
        args,
        {"public_key": str(args.output), "keyid": signer.key_id},
        f"wrote {args.output}; key id {signer.key_id}",
    )
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    data = _read(args.root)
    if str(args.to).startswith(("http://", "https://")):
        from auraseal.client.publish import load_token  # noqa: PLC0415
        from auraseal.client.roots import upload_root  # noqa: PLC0415

        if args.package is None:
            raise UsageError("--package is required when uploading", "--package")
        token = load_token(args.token_file, os.environ.get("AURASEAL_TOKEN"))
        got = upload_root(args.to, args.package, data, token)
        emit(args, got, f"uploaded root v{got['version']} of {args.package} to {args.to}")
        return 0
    from auraseal.server.freshness import install_root  # noqa: PLC0415

    target = install_root(Path(args.to), data, args.package)
    emit(args, {"stored": str(target)}, f"stored {target}")
    return 0
