"""``auraseal publish``: upload a sealed package to a server (docs/SERVER.md)."""

from __future__ import annotations

import argparse
import os

from auraseal.cli._output import emit, input_path, int_at_least, progress_bar
from auraseal.errors import UsageError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "publish",
        help="upload a sealed package (directory, zip or just its manifest) to a server",
        description=(
            "Upload PACKAGE (a sealed package directory or its zip) to SERVER "
            "(e.g. http://127.0.0.1:8000) as PUT /packages/<name>. The token comes from "
            "--token-file or $AURASEAL_TOKEN. Publishing the version the server already "
            "serves with the same content is a no-op (exit 0). Given only an "
            "integrity-manifest.json (e.g. after `auraseal resign`), only the manifest is "
            "sent; the server refuses it unless its files are the served ones. "
            "The roots of trust the package carries (root/<N>.json in the directory or "
            "zip, or beside the given integrity-manifest.json) are uploaded first, in "
            "ascending order, as `auraseal root install --to URL` does; one the server "
            "already serves with the same bytes is skipped. "
            "Exit 2 refused as malformed "
            "or too large, 3 bad token / signatures / version not newer / a draft root / "
            "another root at the same version, 5 network."
        ),
    )
    p.add_argument("package", type=input_path, metavar="PACKAGE")
    p.add_argument("server", metavar="SERVER_URL")
    p.add_argument("--token-file", type=input_path, metavar="F",
                   help="file whose first line is the publish token (else $AURASEAL_TOKEN)")
    p.add_argument("--retries", type=int_at_least(0, "--retries"), default=3,
                   help="retries after a connection error or 502/503/504 (default 3)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per network operation")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_publish)


def cmd_publish(args: argparse.Namespace) -> int:
    from auraseal.client.publish import load_token, publish_package  # noqa: PLC0415 - lazy

    if args.retries < 0:
        raise UsageError("--retries must be >= 0", "--retries")
    if args.timeout <= 0:
        raise UsageError("--timeout must be > 0", "--timeout")
    token = load_token(args.token_file, os.environ.get("AURASEAL_TOKEN"))
    total = args.package.stat().st_size if args.package.is_file() else None
    with progress_bar(args, "publish", total) as advance:
        result = publish_package(
            args.package,
            args.server,
            token,
            progress=advance,
            retries=args.retries,
            timeout=args.timeout,
        )
    sent = [r.version for r in result.roots if r.status == "uploaded"]
    roots = f"; uploaded root v{', v'.join(map(str, sent))}" if sent else ""
    if result.status == "unchanged":
        text = f"unchanged: {result.package} v{result.version} is already served at {result.url}"
    else:
        text = (
            f"published {result.package} v{result.version} ({result.bytes} bytes) "
            f"to {result.url}"
        )
        if result.ledger_entry is not None:
            text += f"; ledger entry {result.ledger_entry}"
    text += roots
    emit(args, {"ok": True, **result.to_dict()}, text)
    return 0
