"""Web subcommands: ``auraseal html`` (rewrite a page so browsers verify natively)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from auraseal.cli._output import emit, input_dir, input_path
from auraseal.errors import UsageError
from auraseal.integrity import ALGORITHMS
from auraseal.signing import load_public_key
from auraseal.web import LOADER_NAME
from auraseal.web.html import MODES, rewrite_file, rewrite_page

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``html`` to ``sub``."""
    p = sub.add_parser(
        "html",
        help="rewrite a page's integrity attributes so browsers enforce them",
        description=(
            "Compute integrity for local scripts and stylesheets, turn auraseal- strings into "
            "standard SRI tokens, add crossorigin, and wire data-fallback-url through the "
            "loader. Writes the page to stdout unless -o is given. Idempotent."
        ),
    )
    p.add_argument("page", type=input_path, metavar="IN.html")
    p.add_argument("-o", "--output", type=Path, metavar="OUT.html", help="write here (atomic)")
    p.add_argument("--in-place", action="store_true", help="rewrite IN.html itself")
    p.add_argument(
        "--root", type=input_dir, help="tree that local URLs name (default: the page's directory)"
    )
    p.add_argument("--manifest", type=input_path, metavar="PATH", help="manifest pinning integrity")
    p.add_argument(
        "--loader-url",
        default="/" + LOADER_NAME,
        help="where the page loads auraseal-loader.js from (default: %(default)s)",
    )
    p.add_argument(
        "--algorithm",
        choices=list(ALGORITHMS),
        default="sha512",
        help="digest for files with no integrity yet",
    )
    p.add_argument(
        "--sign-key", type=Path, action="append", default=[], metavar="PUB",
        help="publisher public key: add integrity=\"ed25519-<key>\" (repeatable)",
    )
    p.add_argument(
        "--mode", choices=MODES, default=None,
        help="pin content (hash), publisher (signature) or both "
        "(default: both with --sign-key, else hash)",
    )
    p.add_argument("--json", action="store_true", help="summary as JSON (with -o/--in-place)")
    p.set_defaults(handler=cmd_html)


def cmd_html(args: argparse.Namespace) -> int:
    keys = [load_public_key(p).raw for p in args.sign_key]
    mode = args.mode or ("both" if keys else "hash")
    if mode == "both" and not keys:
        raise UsageError("--mode both needs --sign-key", "--mode")
    kw: dict[str, Any] = {
        "root": args.root,
        "manifest_path": args.manifest,
        "loader_url": args.loader_url,
        "algorithm": args.algorithm,
        "mode": mode,
        "sign_keys": keys,
    }
    if args.output is None and not args.in_place:
        result = rewrite_page(args.page, **kw)
        if args.json:
            emit(args, {"output": None, "html": result.html})
        else:
            sys.stdout.write(result.html)
        return 0
    out = args.page if args.in_place else args.output
    result = rewrite_file(args.page, out, **kw)
    data = {
        "output": str(out),
        "loader_added": result.loader_added,
        "tags": [
            {
                "tag": c.tag,
                "url": c.url,
                "action": c.action,
                "integrity": c.integrity,
                "auraseal": c.auraseal,
                "fallbacks": list(c.fallbacks),
            }
            for c in result.changes
        ],
    }
    lines = [f"{c.action:9} {c.tag:6} {c.url}" for c in result.changes]
    lines.append(f"wrote {out} ({len(result.changes)} tag(s))")
    emit(args, data, "\n".join(lines))
    return 0
