"""``auraseal fetch`` and ``auraseal rollback`` (the client; see docs/CLIENT.md)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from auraseal._time import parse_duration
from auraseal.cli._core import trust_policy
from auraseal.cli._events import event_sink
from auraseal.cli._ledger import _witness_args, _witnesses
from auraseal.cli._output import (
    emit,
    input_dir,
    input_path,
    int_at_least,
    package_name,
    want_json,
)
from auraseal.errors import StorageError, UsageError

if TYPE_CHECKING:
    from auraseal.client.roots import RootTrust
    from auraseal.client.witnessed import WitnessPolicy

#: Parallel downloads by default (kept in step with auraseal.client.DEFAULT_JOBS;
#: the client is imported lazily so other commands start faster).
DEFAULT_JOBS = 4

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fetch",
        help="fetch a package: verify, repair from parts, install atomically",
        description=(
            "Fetch the package at URL (a package base holding integrity-manifest.json, "
            "or a manifest / BlockHub index.json URL) into DIR. The manifest must be "
            "signed by --trusted-key keys or by the keys pinned for the package; "
            "--trust-on-first-use pins the signing keys of a first fetch, "
            "--allow-unsigned skips the check (reported as UNSIGNED). Exit 0 ok, "
            "1 integrity, 2 usage, 3 trust, 4 unrecoverable, 5 I/O or network; DIR is "
            "unchanged on error."
        ),
    )
    p.add_argument("url", metavar="URL")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR")
    p.add_argument("--package", metavar="NAME", type=package_name("--package"),
                   help="the package name the manifest must carry (default: the one "
                        "installed in DIR, else the URL's last path segment)")
    p.add_argument("--mirror", action="append", default=[], metavar="URL",
                   help="another copy of the package (repeat; tried in order)")
    p.add_argument("--trusted-key", type=input_path, action="append", default=[], metavar="PUB",
                   help="trust this Ed25519 public key (repeat); signatures then required")
    p.add_argument("--threshold", type=int_at_least(1, "--threshold"), default=1,
                   help="distinct trusted signatures needed")
    p.add_argument("--trust-on-first-use", action="store_true",
                   help="no key and nothing pinned yet: pin the keys that signed this "
                        "manifest (all of them required later) in the cache")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="install without checking signatures (reported as UNSIGNED)")
    p.add_argument("--force", action="store_true",
                   help="DIR holds files AuraSeal did not install: move them to the "
                        "rollback copy and install anyway")
    p.add_argument("--root", type=input_path, metavar="ROOT",
                   help="trust anchor: a signed root document (docs/KEYS.md); newer roots "
                   "are walked from the server and pinned in the cache")
    p.add_argument("--require-witnessed-log", metavar="LOGKEY",
                   help="install only if the publish of this version is proven in the "
                   "server's ledger, signed by this log key (name+hash+base64, a file "
                   "holding one, or a PEM public key named auraseal-server) and "
                   "cosigned by --witness keys (docs/CLIENT.md)")
    _witness_args(p)
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="cache directory (default: the user cache dir)")
    p.add_argument("--no-cache", action="store_true", help="use no cache (no rollback state)")
    p.add_argument("--fallback", type=input_dir, metavar="DIR",
                   help="local fallback copies, used only if they match the manifest")
    p.add_argument("--manifest-ttl", default="1h",
                   help="use the cached manifest this long when no server answers "
                        "(online fetches always revalidate it)")
    p.add_argument("--file-ttl", default="6h", help="reuse a cached file this long")
    p.add_argument("--offline", action="store_true", help="use only the cache and fallback")
    p.add_argument("--jobs", type=int_at_least(1, "--jobs"), default=DEFAULT_JOBS,
                   help="parallel downloads")
    p.add_argument("--ledger", metavar="URL",
                   help="record verifications and refusals (default: $AURASEAL_LEDGER if set)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_fetch)

    r = sub.add_parser("rollback", help="restore the version installed before the last fetch")
    r.add_argument("dir", type=input_dir, metavar="DIR")
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=cmd_rollback)


class _Bar:
    """Rich progress: bytes, files, rate and ETA."""

    def __init__(self, progress: Progress) -> None:
        self._p = progress
        self._task: TaskID | None = None
        self._files = 0
        self._total_files = 0

    def start(self, total_bytes: int, total_files: int) -> None:
        self._total_files = total_files
        self._task = self._p.add_task("fetch", total=total_bytes, files=f"0/{total_files}")

    def advance(self, nbytes: int) -> None:
        if self._task is not None:
            self._p.advance(self._task, nbytes)

    def file_done(self, path: str, source: str) -> None:
        self._files += 1
        if self._task is not None:
            self._p.update(self._task, files=f"{self._files}/{self._total_files}")


@contextlib.contextmanager
def _progress(args: argparse.Namespace) -> Iterator[_Bar | None]:
    if want_json(args) or not sys.stderr.isatty():
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[files]} files"),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=Console(stderr=True),  # the bar is not output: stdout stays clean
    ) as prog:
        yield _Bar(prog)


def cmd_fetch(args: argparse.Namespace) -> int:
    from auraseal.client import fetch_package  # noqa: PLC0415

    policy = trust_policy(args)
    cache_dir: Path | None = None
    if not args.no_cache:
        cache_dir = args.cache or platformdirs.user_cache_path("auraseal") / "fetch"
    with event_sink(args.ledger, metadata={"tool": "auraseal fetch"}) as events, \
            _progress(args) as bar:
        report = fetch_package(
            args.url,
            args.output,
            mirrors=args.mirror,
            policy=policy,
            cache_dir=cache_dir,
            fallback_dir=args.fallback,
            manifest_ttl=parse_duration(args.manifest_ttl, "--manifest-ttl"),
            file_ttl=parse_duration(args.file_ttl, "--file-ttl"),
            offline=args.offline,
            jobs=args.jobs,
            progress=bar,
            events=events,
            package=args.package,
            allow_unsigned=args.allow_unsigned,
            trust_on_first_use=args.trust_on_first_use,
            force=args.force,
            root=_root_trust(args, cache_dir),
            witnessed=_witness_policy(args),
        )
    lines = [report.summary()]
    seen = report.trust.get("witnessed")
    if seen:
        lines.append(f"publish proven in the witnessed ledger: entry {seen['entry_id']}, "
                     f"tree size {seen['tree_size']}")
    lines += [f"warning: {w}" for w in report.warnings]
    emit(args, report.to_dict(), "\n".join(lines))
    return 0


def _witness_policy(args: argparse.Namespace) -> WitnessPolicy | None:
    """``--require-witnessed-log LOGKEY --witness VKEY ... --witness-threshold K``."""
    from auraseal.client.witnessed import WitnessPolicy  # noqa: PLC0415
    from auraseal.ledger.note import load_note_verifier  # noqa: PLC0415
    from auraseal.server.ledger_port import CHECKPOINT_NAME  # noqa: PLC0415

    if args.require_witnessed_log is None:
        if args.witness or args.witness_threshold is not None:
            raise UsageError("--witness needs --require-witnessed-log", "--witness")
        return None
    witnesses, k = _witnesses(args)
    log_key = load_note_verifier(args.require_witnessed_log, CHECKPOINT_NAME)
    return WitnessPolicy(log_key, tuple(witnesses), k)


def _root_trust(args: argparse.Namespace, cache_dir: Path | None) -> RootTrust | None:
    """``--root`` (and, with ``--trust-on-first-use``, the server's root/1.json)."""
    from auraseal.client.roots import RootTrust  # noqa: PLC0415
    tofu = bool(getattr(args, "trust_on_first_use", False))
    if args.root is None and not tofu:
        return None  # a root pinned in the cache still applies (fetch_package)
    anchor = None
    if args.root is not None:
        try:
            anchor = args.root.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read root: {exc.strerror}", str(args.root)) from exc
    return RootTrust(anchor, str(args.root), cache_dir, tofu)


def cmd_rollback(args: argparse.Namespace) -> int:
    from auraseal.client import rollback  # noqa: PLC0415
    from auraseal.client.install import FOREIGN  # noqa: PLC0415

    record = rollback(args.dir)
    cur = record.current
    if cur is None:
        text = f"rolled back {args.dir} to the previous tree"
    elif cur.name == FOREIGN:
        text = f"rolled back {args.dir} to the files that were there before 'fetch --force'"
    else:
        text = f"rolled back {args.dir} to {cur.name} v{cur.version}"
    emit(
        args,
        {
            "ok": True,
            "dir": str(args.dir),
            "current": None if cur is None else cur.to_dict(),
            "previous": None if record.previous is None else record.previous.to_dict(),
        },
        text,
    )
    return 0


