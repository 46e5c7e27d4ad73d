"""``auraseal version [--engines]``: the version and the erasure engines in use."""

from __future__ import annotations

import argparse
from typing import Any

from auraseal._version import VERSION
from auraseal.cli._output import emit

__all__ = ["VERSION", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("version", help="print the version (and the erasure engines in use)")
    p.add_argument(
        "--engines", action="store_true",
        help="also load the erasure engines and show which are in use, where, and why not",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_version)


def cmd_version(args: argparse.Namespace) -> int:
    data: dict[str, Any] = {"ok": True, "version": VERSION}
    lines = [f"auraseal {VERSION}"]
    if args.engines:
        from auraseal.sealing.erasure import engines  # noqa: PLC0415 - loads native code

        found = engines()
        data["engines"] = [s.to_dict() for s in found.statuses()]
        data["warning"] = found.warning
        for s in found.statuses():
            state = "in use" if s.in_use else ("available" if s.available else "unavailable")
            serves = f" (computes {', '.join(s.serves)} parts)" if s.in_use and s.serves else ""
            line = f"  {s.name:<9} {state}{serves}"
            if s.path:
                line += f"  {s.path}"
            if s.reason and not s.in_use:
                line += f"  ({s.reason})"
            lines.append(line)
    emit(args, data, "\n".join(lines))
    return 0
