"""Sealing subcommands: ``seal``, ``unseal``, ``scrub``, ``repair``, ``inspect``.

Exit codes: 0 ok; 1 damaged but recoverable (scrub); 2 bad input; 3 trust
failure; 4 something lost / not rebuildable; 5 I/O.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from auraseal._time import format_time, parse_duration
from auraseal.cli._core import add_trust_args, trust_policy
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
from auraseal.errors import StorageError, UsageError
from auraseal.manifest import MANIFEST_NAME
from auraseal.sealing import (
    CODEC_NAMES,
    DEFAULT_COHERENCE,
    DEFAULT_PART_SIZE,
    Package,
    open_package,
    repair_path,
    scrub,
    seal_tree,
    unseal,
)
from auraseal.sealing.erasure import ENGINE_NAMES
from auraseal.sealing.format import (
    FOOTER_SIZE,
    HEADER_SIZE,
    MAGIC,
    PartFooter,
    PartHeader,
    parse_part,
)
from auraseal.signing import TrustState

__all__ = ["register"]


def _open(args: argparse.Namespace) -> Package:
    state = TrustState(args.state) if args.state else None
    return open_package(args.package, policy=trust_policy(args), state=state)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("seal", help="seal a directory into a package with Reed-Solomon parts")
    p.add_argument("src", type=input_dir)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="PKG")
    p.add_argument("--part-size", type=int_at_least(1, "--part-size"),
                   default=DEFAULT_PART_SIZE, metavar="BYTES")
    p.add_argument(
        "--coherence",
        type=float,
        default=DEFAULT_COHERENCE,
        metavar="C",
        help="fraction of parts needed to rebuild (default 0.954)",
    )
    p.add_argument("--codec", choices=CODEC_NAMES, default="zstd")
    p.add_argument(
        "--engine",
        choices=ENGINE_NAMES,
        default=None,
        help="erasure engine (default: chosen by fragment size)",
    )
    p.add_argument("--zip", action="store_true", help="also write PKG.zip")
    p.add_argument("--key", type=key_source, action="append", default=[],
                   help="sign with KEY: a key file or pkcs11: URI (repeat)")
    add_pin_args(p)
    p.add_argument("--name", type=package_name("--name"),
                   help="package name (default: the source directory's name)")
    p.add_argument("--version", type=int_at_least(0, "--version"), default=1,
                   help="monotonically increasing version")
    p.add_argument("--expires", default="30d", help="validity, e.g. 12h, 30d, or 'never'")
    p.add_argument("--jobs", type=int_at_least(1, "--jobs"), default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_seal)

    p = sub.add_parser("unseal", help="rebuild every file of a package (directory or zip)")
    p.add_argument("package", type=input_path)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    p.add_argument("--jobs", type=int_at_least(1, "--jobs"), default=None)
    add_trust_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_unseal)

    p = sub.add_parser("scrub", help="check every file and part (exit 0 intact/1 damaged/4 lost)")
    p.add_argument("package", type=input_path)
    p.add_argument("--jobs", type=int_at_least(1, "--jobs"), default=None)
    add_trust_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_scrub)

    p = sub.add_parser("repair", help="rebuild missing or corrupt files and parts in place")
    p.add_argument("package", type=input_path)
    p.add_argument("--jobs", type=int_at_least(1, "--jobs"), default=None)
    add_trust_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_repair)

    p = sub.add_parser("inspect", help="show a part file's header and footer, or a package summary")
    p.add_argument("path", type=input_path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_inspect)


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def cmd_seal(args: argparse.Namespace) -> int:
    src: Path = args.src
    if not src.is_dir():
        raise StorageError("not a directory", str(src))
    keys = load_signers(args, args.key)
    expires = None if args.expires == "never" else parse_duration(args.expires, "--expires")
    out: Path = args.output
    zip_path = Path(str(out).rstrip("/") + ".zip") if args.zip else None
    with event_sink() as events, progress_bar(args, "sealing", _tree_size(src)) as advance:
        manifest = seal_tree(
            src,
            out,
            part_size=args.part_size,
            coherence=args.coherence,
            codec=args.codec,
            keys=keys,
            name=args.name,
            version=args.version,
            expires=expires,
            zip_path=zip_path,
            engine=args.engine,
            jobs=args.jobs,
            progress=advance,
            events=events,
        )
    parts = sum(len(f.recovery.parts) for f in manifest.files if f.recovery)
    emit(
        args,
        {
            "package": str(out),
            "zip": None if zip_path is None else str(zip_path),
            "name": manifest.name,
            "version": manifest.version,
            "files": len(manifest.files),
            "bytes": manifest.total_size,
            "parts": parts,
            "signed_by": [k.key_id for k in keys],
            "expires": None if manifest.expires is None else format_time(manifest.expires),
        },
        f"sealed {len(manifest.files)} files ({manifest.total_size} bytes) into {out} "
        f"with {parts} parts" + (f"; wrote {zip_path}" if zip_path else ""),
    )
    return 0


def _finish(
    args: argparse.Namespace, data: dict[str, Any], text: str, errors: dict[str, str]
) -> int:
    """Print the report; I/O errors end as one ``auraseal: error:`` line (exit 5)
    naming the first path (with ``--json`` the report carries them all)."""
    if errors and not args.json:
        emit(args, data, text)
        first = sorted(errors)[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise StorageError(f"{errors[first]}{more}", first)
    emit(args, data, text)
    return int(data["exit_code"])


def cmd_unseal(args: argparse.Namespace) -> int:
    pkg_path, out_path = args.package.resolve(), args.output.resolve()
    if out_path == pkg_path or pkg_path in out_path.parents:
        raise UsageError("the output is inside the package", str(args.output))
    with (
        event_sink() as events,
        _open(args) as pkg,
        progress_bar(args, "unsealing", pkg.manifest.total_size) as adv,
    ):
        report = unseal(pkg, args.output, jobs=args.jobs, progress=adv, strict=False,
                        events=events)
    lines = [f"lost {p}: {why}" for p, why in sorted(report.lost.items())]
    lines += [f"integrity failure: {p}: {why}" for p, why in sorted(report.damaged.items())]
    lines += [f"I/O error: {w}: {e}" for w, e in sorted(report.errors.items())]
    lines.append(
        f"unsealed {len(report.copied) + len(report.rebuilt)} files into {args.output} "
        f"({len(report.rebuilt)} rebuilt from parts, {len(report.lost)} lost"
        + (f", {len(report.errors)} I/O errors)" if report.errors else ")")
    )
    return _finish(args, report.to_dict(), "\n".join(lines), report.errors)


def cmd_scrub(args: argparse.Namespace) -> int:
    with _open(args) as pkg, progress_bar(args, "scrubbing", pkg.manifest.total_size) as adv:
        report = scrub(pkg, jobs=args.jobs, progress=adv)
    emit(args, report.to_dict(), report.summary())
    return report.exit_code


def cmd_repair(args: argparse.Namespace) -> int:
    with _open(args) as pkg:
        total = pkg.manifest.total_size
    state = TrustState(args.state) if args.state else None
    with event_sink() as events, progress_bar(args, "repairing", total) as adv:
        report = repair_path(
            args.package, jobs=args.jobs, progress=adv, events=events,
            policy=trust_policy(args), state=state,
        )
    return _finish(args, report.to_dict(), report.summary(), report.errors)


def _inspect_part(path: Path) -> tuple[dict[str, Any], str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read: {exc.strerror}", str(path)) from exc
    header = PartHeader.unpack(data, str(path))
    footer = (
        PartFooter.unpack(data[-FOOTER_SIZE:], str(path))
        if len(data) >= FOOTER_SIZE + HEADER_SIZE
        else None
    )
    info: dict[str, Any] = {"file": str(path), "size": len(data), "header": header.to_dict()}
    info["footer"] = None if footer is None else footer.to_dict()
    parse_part(data, str(path))  # raises on a bad footer: exit 1 / 2
    info["footer_ok"] = True
    h = info["header"]
    text = "\n".join(
        [f"{path}: AuraSeal part file, format {h['format_version']}, {len(data)} bytes"]
        + [f"  {k:17} {v}" for k, v in h.items() if k != "format_version"]
        + [
            f"  footer sha256     {info['footer']['sha256']}",
            f"  footer crc32      {info['footer']['crc32']}  (checked: OK)",
        ]
    )
    return info, text


def cmd_inspect(args: argparse.Namespace) -> int:
    path: Path = args.path
    if path.is_file():
        with open(path, "rb") as fh:
            magic = fh.read(len(MAGIC))
        if magic == MAGIC:
            info, text = _inspect_part(path)
            emit(args, info, text)
            return 0
    with open_package(path) as pkg:
        m = pkg.manifest
        sealed = [f for f in m.files if f.recovery]
        parts = sum(len(f.recovery.parts) for f in sealed if f.recovery)
        codecs: dict[str, int] = {}
        for f in sealed:
            assert f.recovery is not None
            codecs[f.recovery.codec] = codecs.get(f.recovery.codec, 0) + 1
        info = {
            "package": str(path),
            "zip": pkg.is_zip,
            "name": m.name,
            "version": m.version,
            "created": format_time(m.created),
            "expires": None if m.expires is None else format_time(m.expires),
            "files": len(m.files),
            "sealed_files": len(sealed),
            "bytes": m.total_size,
            "parts": parts,
            "codecs": codecs,
            "manifest": MANIFEST_NAME,
        }
    text = (
        f"{path}: package {m.name!r} version {m.version}, {len(m.files)} files "
        f"({m.total_size} bytes), {len(sealed)} sealed with {parts} parts; codecs "
        + ", ".join(f"{k}={v}" for k, v in sorted(codecs.items()))
    )
    emit(args, info, text)
    return 0
