"""Foundation subcommands: ``hash``, ``check``, ``keygen``, ``manifest build|verify``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from auraseal._fs import atomic_write_bytes
from auraseal._time import format_time, parse_duration
from auraseal.cli._events import event_sink
from auraseal.cli._keys import add_pin_args, load_signers
from auraseal.cli._output import (
    emit,
    input_dir,
    input_path,
    int_at_least,
    key_source,
    package_name,
    progress_bar,
)
from auraseal.errors import (
    DigestMismatchError,
    MalformedIntegrityError,
    NotFoundError,
    StorageError,
    TreeMismatchError,
    UsageError,
)
from auraseal.integrity import (
    ALGORITHMS,
    auraseal_string,
    hash_file,
    parse_integrity,
    parse_sri,
    sri_token,
    verify_file,
)
from auraseal.manifest import (
    FORMATS,
    MANIFEST_NAME,
    ParsedManifest,
    VerifiedManifest,
    build_manifest,
    dump_manifest,
    parse_manifest,
    resign_manifest,
    verify_tree,
)
from auraseal.signing import (
    TrustPolicy,
    TrustState,
    generate_keypair,
    load_public_key,
)

__all__ = ["register", "trust_policy"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("hash", help="print a file's integrity string")
    p.add_argument("file", type=input_path)
    p.add_argument("--algorithm", choices=list(ALGORITHMS), default="sha512")
    p.add_argument(
        "--recovery", type=input_path, metavar="FILE2", help="dual string with a recovery copy"
    )
    p.add_argument("--sri", action="store_true", help="plain W3C SRI token")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_hash)

    p = sub.add_parser("check", help="check a file against an integrity string (exit 0/1/2)")
    p.add_argument("file", type=input_path)
    p.add_argument("integrity")
    p.add_argument(
        "--signature-headers", type=Path, metavar="FILE",
        help="the response's headers (curl -D): verifies ed25519- tokens as a browser does",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_check)

    p = sub.add_parser("keygen", help="create an Ed25519 key pair (KEY, KEY.pub)")
    p.add_argument("key", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_keygen)

    m = sub.add_parser("manifest", help="build or verify a manifest").add_subparsers(
        dest="manifest_command", metavar="ACTION"
    )
    m.required = True
    b = m.add_parser("build", help="hash a tree into a (signed) manifest")
    b.add_argument("dir", type=input_dir)
    b.add_argument("-o", "--output", type=Path, help=f"default DIR/{MANIFEST_NAME}; '-' = stdout")
    b.add_argument("--name", type=package_name("--name"),
                   help="package name (default: the directory's name)")
    b.add_argument("--version", type=int_at_least(0, "--version"), default=1,
                   help="monotonically increasing version")
    b.add_argument("--expires", default="30d", help="validity, e.g. 12h, 30d, or 'never'")
    b.add_argument("--key", type=key_source, action="append", default=[],
                   help="sign with KEY: a key file or pkcs11: URI (repeat)")
    add_pin_args(b)
    b.add_argument("--format", choices=FORMATS, default="native")
    b.add_argument("--algorithm", choices=list(ALGORITHMS), default=None)
    b.add_argument("--base-url", help="absolute URL prefix for each file (BlockHub url)")
    b.add_argument("--jobs", type=int_at_least(1, "--jobs"), default=None,
                   help="hashing threads (default: all cores)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(handler=cmd_manifest_build)

    r = sub.add_parser(
        "resign",
        help="a new manifest version with the same files, a fresh expiry and new signatures",
        description=(
            "Re-sign MANIFEST (a manifest file or a package directory holding one) with "
            "--key: version +1 (or --version N), created now, expires after --expires. "
            "The input must already carry a valid signature by one of the keys "
            "(--accept-foreign-manifest to re-sign a file list you did not sign). "
            "Written atomically in place, or to -o OUT."
        ),
    )
    r.add_argument("manifest", type=input_path, metavar="MANIFEST")
    r.add_argument("--key", type=key_source, action="append", default=[], required=True,
                   help="sign with KEY: a key file or pkcs11: URI (repeat)")
    add_pin_args(r)
    r.add_argument("--expires", default="30d", help="validity from now, e.g. 30d, or 'never'")
    r.add_argument("--version", type=int_at_least(0, "--version"), default=None,
                   help="new version (default: +1)")
    r.add_argument("-o", "--output", type=Path, help="write here instead of in place")
    r.add_argument("--accept-foreign-manifest", action="store_true",
                   help="re-sign even if none of the keys signed the input (unsafe)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=cmd_resign)

    v = m.add_parser("verify", help="verify a tree against its manifest")
    v.add_argument("dir", type=input_dir)
    v.add_argument("--manifest", type=input_path, help=f"default DIR/{MANIFEST_NAME}")
    add_trust_args(v)
    v.add_argument("--jobs", type=int_at_least(1, "--jobs"), default=None)
    v.add_argument("--json", action="store_true")
    v.set_defaults(handler=cmd_manifest_verify)


def add_trust_args(p: argparse.ArgumentParser) -> None:
    """``--trusted-key``, ``--threshold``, ``--state`` (shared with other parts)."""
    p.add_argument(
        "--trusted-key", type=input_path, action="append", default=[], metavar="PUB",
        help="trust this Ed25519 public key (repeat); required signatures then apply",
    )
    p.add_argument("--threshold", type=int_at_least(1, "--threshold"), default=1,
                   help="distinct trusted signatures needed")
    p.add_argument("--state", type=Path, help="rollback state file (highest trusted versions)")


def trust_policy(args: argparse.Namespace) -> TrustPolicy | None:
    keys = [load_public_key(p) for p in args.trusted_key]
    if not keys:
        if args.threshold != 1:
            raise UsageError("--threshold needs --trusted-key", "--threshold")
        return None
    return TrustPolicy(keys, args.threshold)


def _file_sizes(*paths: Path | None) -> Callable[[], int]:
    """The bar's total: the sizes of ``paths`` (0 for one that cannot be stat'ed:
    the hash itself reports it)."""

    def total() -> int:
        n = 0
        for p in paths:
            if p is not None:
                with contextlib.suppress(OSError):
                    n += os.stat(p).st_size
        return n

    return total


def cmd_hash(args: argparse.Namespace) -> int:
    alg = args.algorithm
    with progress_bar(args, "hashing", _file_sizes(args.file, args.recovery)) as advance:
        digest = hash_file(args.file, alg, advance)
        second = hash_file(args.recovery, alg, advance) if args.recovery else None
    if args.sri:
        out = sri_token(alg, digest)
        if second is not None:
            out = f"{out} {sri_token(alg, second)}"
    else:
        out = auraseal_string(digest, second, alg)
    emit(args, {"file": str(args.file), "integrity": out}, out)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    text: str = args.integrity
    if args.signature_headers is None and (
        text.strip().startswith("auraseal-") or not parse_sri(text).signatures
    ):
        integ = parse_integrity(text, "integrity")
        with progress_bar(args, "checking", _file_sizes(args.file)) as advance:
            verify_file(args.file, integ, str(args.file), advance)
        emit(args, {"file": str(args.file), "ok": True}, f"{args.file}: OK")
        return 0
    # W3C SRI metadata: the browser's verdict (docs/WEB.md, "SRI parity")
    from auraseal._time import utcnow  # noqa: PLC0415
    from auraseal.httpsig import (  # noqa: PLC0415
        FAIL,
        UNVERIFIED,
        browser_verdict,
        read_header_file,
    )

    headers = None
    if args.signature_headers is not None:
        try:
            raw = Path(args.signature_headers).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read: {exc.strerror}", str(args.signature_headers)) from exc
        headers = read_header_file(raw, str(args.signature_headers))
    try:
        body = Path(args.file).read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read: {exc.strerror}", str(args.file)) from exc
    verdict, why = browser_verdict(text, body, headers, utcnow())
    if verdict == UNVERIFIED:
        raise MalformedIntegrityError(why, "integrity")
    if verdict == FAIL:
        raise DigestMismatchError(why, str(args.file), expected=text, actual="")
    emit(args, {"file": str(args.file), "ok": True, "reason": why}, f"{args.file}: OK ({why})")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    key = generate_keypair(args.key)
    pub = f"{args.key}.pub"
    emit(
        args,
        {"private_key": str(args.key), "public_key": pub, "keyid": key.key_id},
        f"wrote {args.key} (private, 0600) and {pub}; key id {key.key_id}",
    )
    return 0


def cmd_manifest_build(args: argparse.Namespace) -> int:
    root: Path = args.dir
    if not root.is_dir():
        raise StorageError("not a directory", str(root))
    alg = args.algorithm or ("sha256" if args.format == "blockhub" else "sha512")
    expires = None if args.expires == "never" else parse_duration(args.expires, "--expires")
    keys = load_signers(args, args.key)
    out: Path | None = args.output
    exclude = {MANIFEST_NAME}
    if out is not None and str(out) != "-":
        with contextlib.suppress(ValueError):
            exclude.add(out.resolve().relative_to(root.resolve()).as_posix())

    def total() -> int:
        return sum(
            p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink()
        )

    with progress_bar(args, "hashing", total) as advance:
        manifest = build_manifest(
            root,
            name=args.name or root.resolve().name,
            version=args.version,
            expires=expires,
            algorithm=alg,
            jobs=args.jobs,
            progress=advance,
            exclude=frozenset(exclude),
            base_url=args.base_url,
        )
    data = dump_manifest(manifest, args.format, keys, args.base_url)
    if out is not None and str(out) == "-":
        sys.stdout.buffer.write(data)
        return 0
    target = out or root / MANIFEST_NAME
    atomic_write_bytes(target, data)
    emit(
        args,
        {
            "manifest": str(target),
            "name": manifest.name,
            "version": manifest.version,
            "files": len(manifest.files),
            "bytes": manifest.total_size,
            "expires": None if manifest.expires is None else format_time(manifest.expires),
            "signed_by": [k.key_id for k in keys],
            "format": args.format,
        },
        f"wrote {target}: {len(manifest.files)} files, {manifest.total_size} bytes, "
        f"version {manifest.version}, {len(keys)} signature(s)",
    )
    return 0


def cmd_manifest_verify(args: argparse.Namespace) -> int:
    root: Path = args.dir
    mpath: Path = args.manifest or root / MANIFEST_NAME
    policy = trust_policy(args)
    state = TrustState(args.state) if args.state else None
    try:
        raw = mpath.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read manifest: {exc.strerror}", str(mpath)) from exc
    parsed = parse_manifest(raw, str(mpath))
    vm = parsed.verify(policy)
    manifest = vm.manifest
    if state is not None:
        state.check(manifest.name, manifest.version, vm.digest, str(mpath))
    signature = _signature_status(parsed, vm)
    exclude = {MANIFEST_NAME}
    with contextlib.suppress(ValueError):
        exclude.add(mpath.resolve().relative_to(root.resolve()).as_posix())
    with progress_bar(args, "verifying", manifest.total_size) as advance:
        report = verify_tree(
            root, manifest, progress=advance, jobs=args.jobs, exclude=frozenset(exclude)
        )
    data = {"manifest": str(mpath), "name": manifest.name, "version": manifest.version}
    data.update(report.to_dict())
    data["signature"] = signature
    with event_sink() as events:
        if events is not None:
            events.record(
                "manifest_verify",
                {
                    "package": manifest.name,
                    "version": manifest.version,
                    "ok": report.ok,
                    "checked": report.checked,
                    "modified": [m.path for m in report.modified],
                    "missing": report.missing,
                    "unexpected": report.unexpected,
                    "signed": policy is not None,
                },
            )
    if not report.ok:
        lines = [
            f"{m.path}: modified (expected {m.expected}, got {m.actual})" for m in report.modified
        ]
        lines += [f"{p}: missing" for p in report.missing]
        lines += [f"{p}: unexpected" for p in report.unexpected]
        if args.json:
            emit(args, data)
            return TreeMismatchError.exit_code
        sys.stderr.write("\n".join(lines) + "\n")
        raise TreeMismatchError(report.summary(), str(root), report=report)
    if state is not None:
        state.record(manifest.name, manifest.version, vm.digest)
    emit(args, data, f"{root}: OK ({report.checked} files, {manifest.name} "
                     f"v{manifest.version}); {signature['text']}")
    return 0


def _signature_status(parsed: ParsedManifest, vm: VerifiedManifest) -> dict[str, Any]:
    """What ``manifest verify`` says about signatures (already checked against
    the policy by the caller): ``verified``, ``unchecked`` (signed, but no
    --trusted-key) or ``unsigned`` — never silence."""
    doc = parsed.doc
    sigs = doc.get("signatures") if isinstance(doc, dict) else None
    present = len(sigs) if isinstance(sigs, list) else 0
    out: dict[str, Any] = {"present": present}
    policy = vm.policy
    if policy is not None:
        good = vm.signers
        keys = len({k.key_id for k in policy.keys})
        out.update(
            status="verified", signatures=len(good), trusted_keys=keys,
            threshold=policy.threshold, key_ids=sorted(good),
            text=f"verified: {len(good)} of {keys} trusted signatures "
                 f"(threshold {policy.threshold})",
        )
    elif present:
        out.update(status="unchecked", signatures=0,
                   text=f"hashes match; NOT verified: {present} signature(s) not checked "
                        "(no --trusted-key)")
    else:
        out.update(status="unsigned", signatures=0, text="hashes match; NOT signed")
    return out


def cmd_resign(args: argparse.Namespace) -> int:
    src: Path = args.manifest
    path = src / MANIFEST_NAME if src.is_dir() else src
    if args.version is not None and args.version < 0:
        raise UsageError("--version must be >= 0", "--version")
    expires = None if args.expires == "never" else parse_duration(args.expires, "--expires")
    keys = load_signers(args, args.key)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFoundError("no such manifest", str(path)) from exc
    except OSError as exc:
        raise StorageError(f"cannot read manifest: {exc.strerror}", str(path)) from exc
    manifest, out = resign_manifest(
        data,
        keys,
        str(path),
        version=args.version,
        expires=expires,
        require_own_signature=not args.accept_foreign_manifest,
    )
    target: Path = args.output or path
    atomic_write_bytes(target, out)
    emit(
        args,
        {
            "manifest": str(target),
            "name": manifest.name,
            "version": manifest.version,
            "expires": None if manifest.expires is None else format_time(manifest.expires),
            "signed_by": [k.key_id for k in keys],
        },
        f"wrote {target}: {manifest.name} v{manifest.version}, expires "
        f"{'never' if manifest.expires is None else format_time(manifest.expires)}, "
        f"{len(keys)} signature(s)",
    )
    return 0
