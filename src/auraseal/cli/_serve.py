"""``auraseal serve``, ``auraseal nginx-conf`` and ``auraseal publish-token``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from auraseal._fs import atomic_write_bytes
from auraseal._time import parse_duration
from auraseal.cli._core import trust_policy
from auraseal.cli._output import emit
from auraseal.errors import UsageError

__all__ = ["register"]


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = units.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in units else t
    if not num.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 2G)")
    return int(num) * mult


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve a directory of sealed packages over HTTP")
    p.add_argument(
        "root", type=Path, nargs="?",
        help="package directory (default: the user data dir, with the bundled example sealed)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--ledger", metavar="URL", help="sqlite:///path or postgresql://... "
                   "(default: ROOT/.auraseal/ledger.sqlite3)")
    p.add_argument("--ledger-jsonl", type=Path, metavar="FILE", help="append-only JSONL mirror")
    p.add_argument(
        "--trusted-key", type=Path, action="append", default=[], metavar="PUB",
        help="accept publishes signed by this key (repeat; default: ROOT's own publisher key)",
    )
    p.add_argument("--threshold", type=int, default=1, help="distinct trusted signatures needed")
    p.add_argument("--publish-token-file", type=Path, metavar="F",
                   help="SHA-256 hashes of bearer tokens allowed to publish")
    p.add_argument("--max-upload", type=_size, default=1 << 30, metavar="SIZE")
    p.add_argument("--scrub-interval", default="1h", help="how often the store is scrubbed")
    p.add_argument("--commit-interval", default="5m", help="ledger block timer")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--server", choices=("granian", "uvicorn"), default="granian",
                   help="the ASGI server that runs the app (default: granian)")
    p.add_argument("--integrity-policy", choices=("enforce", "report-only"),
                   help="send Integrity-Policy(-Report-Only) on HTML; reports go to /reports")
    p.add_argument("--example", action="store_true",
                   help="seal the bundled example site into ROOT if it holds no package")
    p.set_defaults(handler=cmd_serve)

    n = sub.add_parser("nginx-conf", help="print an nginx config serving ROOT statically")
    n.add_argument("root", type=Path)
    n.add_argument("--server-name", default="_")
    n.add_argument("--listen", default="80", help="port or address:port")
    n.add_argument("--upstream", metavar="URL",
                   help="proxy publishing, archives and the ledger to this auraseal serve")
    n.add_argument("--standalone", type=Path, metavar="DIR",
                   help="a complete nginx.conf keeping pid, logs and temp files in DIR")
    n.add_argument("--integrity-policy", choices=("enforce", "report-only"),
                   help="send Integrity-Policy(-Report-Only) on HTML responses")
    n.add_argument("-o", "--output", type=Path)
    n.set_defaults(handler=cmd_nginx_conf)

    t = sub.add_parser("publish-token", help="create a publish token; append its hash to FILE")
    t.add_argument("file", type=Path)
    t.add_argument("--json", action="store_true")
    t.set_defaults(handler=cmd_publish_token)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415

    from auraseal.server.app import create_app  # noqa: PLC0415
    from auraseal.server.config import ServerConfig  # noqa: PLC0415
    from auraseal.server.defaults import (  # noqa: PLC0415
        CONFIG_ENV,
        config_to_env,
        default_root,
        ensure_example,
        local_publisher_key,
    )
    from auraseal.server.state import prepare_root  # noqa: PLC0415
    from auraseal.server.store import PackageStore  # noqa: PLC0415

    root: Path = args.root or default_root()
    if (args.root is None or args.example) and ensure_example(root):
        print(f"auraseal: sealed the bundled example site into {root}/site", file=sys.stderr)
    if not root.is_dir():
        raise UsageError("ROOT is not a directory", str(root))
    policy = trust_policy(args)
    keys = tuple(policy.keys) if policy is not None else ()
    if not keys:
        own = local_publisher_key(root)
        keys = (own,) if own is not None else ()
    if args.workers < 1:
        raise UsageError("--workers must be at least 1", "--workers")
    config = ServerConfig(
        root=root,
        host=args.host,
        port=args.port,
        ledger_url=args.ledger,
        ledger_jsonl=args.ledger_jsonl,
        trusted_keys=keys,
        threshold=args.threshold,
        publish_token_file=args.publish_token_file,
        max_upload_bytes=args.max_upload,
        scrub_interval=parse_duration(args.scrub_interval, "--scrub-interval").total_seconds(),
        commit_interval=parse_duration(args.commit_interval, "--commit-interval").total_seconds(),
        integrity_policy=args.integrity_policy,
    )
    # Start-up work on ROOT happens once, here, before any worker starts
    # (workers then find nothing left to adopt or clean).
    prepare_root(PackageStore(root, config.keep_versions))
    print(f"auraseal: serving {root} on http://{args.host}:{args.port}/", file=sys.stderr)
    if args.server == "granian":
        from granian import Granian  # noqa: PLC0415
        from granian.constants import Interfaces  # noqa: PLC0415

        os.environ[CONFIG_ENV] = config_to_env(config)
        Granian(
            "auraseal.server.app:app_from_env", address=args.host, port=args.port,
            interface=Interfaces.ASGI, workers=args.workers, factory=True, log_access=False,
        ).serve()
        return 0
    common = {"host": args.host, "port": args.port, "log_level": "info",
              "server_header": False, "proxy_headers": False}
    if args.workers > 1:
        os.environ[CONFIG_ENV] = config_to_env(config)
        uvicorn.run("auraseal.server.app:app_from_env", factory=True, workers=args.workers,
                    **common)
    else:
        uvicorn.run(create_app(config), **common)
    return 0


def cmd_nginx_conf(args: argparse.Namespace) -> int:
    from auraseal.server.nginx import render_nginx_conf  # noqa: PLC0415
    from auraseal.server.state import prepare_root  # noqa: PLC0415
    from auraseal.server.store import PackageStore  # noqa: PLC0415

    if not args.root.is_dir():
        raise UsageError("ROOT is not a directory", str(args.root))
    # nginx serves version directories as they are: adopt plain package
    # folders first, which moves anything the manifest does not list aside.
    prepare_root(PackageStore(args.root))
    text = render_nginx_conf(
        args.root, server_name=args.server_name, listen=str(args.listen),
        upstream=args.upstream, standalone=args.standalone,
        integrity_policy=args.integrity_policy,
    )
    if args.output is not None:
        atomic_write_bytes(args.output, text.encode())
    else:
        sys.stdout.write(text)
    return 0


def cmd_publish_token(args: argparse.Namespace) -> int:
    from auraseal.server.publish import new_token  # noqa: PLC0415

    token, line = new_token()
    path: Path = args.file
    old = path.read_text("utf-8") if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    atomic_write_bytes(path, (old + line + "\n").encode(), mode=0o600)
    emit(args, {"token": token, "file": str(path), "stored": line},
         f"{token}\n(only its hash was stored in {path}; keep the token secret)")
    return 0
