"""``auraseal serve``, ``auraseal nginx-conf`` and ``auraseal publish-token``."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auraseal._extras import require
from auraseal._fs import atomic_write_bytes
from auraseal._time import parse_duration
from auraseal.cli._core import trust_policy
from auraseal.cli._keys import add_pin_args, load_signers
from auraseal.cli._output import (
    emit,
    input_dir,
    input_path,
    int_at_least,
    key_source,
    listen_address,
)
from auraseal.errors import AuraSealError, ConfigError, NetworkError, UsageError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from auraseal.server.config import ServerConfig
    from auraseal.server.logs import ServerLog

__all__ = ["load_config_file", "register", "worker_app"]

#: How worker processes (``--workers N``, granian) learn the log settings.
LOG_ENV = "AURASEAL_SERVE_LOG"

#: Defaults of ``auraseal serve``: the parser's own defaults are suppressed so
#: that what the command line gave, what ``--config`` gave and these can be told apart.
SERVE_DEFAULTS: dict[str, Any] = {
    "root": None,
    "config": None,
    "host": "127.0.0.1",
    "port": 8000,
    "ledger": None,
    "ledger_jsonl": None,
    "trusted_key": [],
    "threshold": 1,
    "publish_token_file": None,
    "max_upload": 1 << 30,
    "scrub_interval": "1h",
    "commit_interval": "5m",
    "expiry_warning": "7d",
    "workers": 1,
    "server": "granian",
    "example": False,
    "log_format": "text",
    "integrity_policy": None,
    "timestamp_key": None,
    "timestamp_expires": "1d",
    "pin_file": None,
    "pkcs11_module": None,
    "access_log": True,
    "witness_url": [],
}


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = units.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in units else t
    if not num.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 2G)")
    return int(num) * mult


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve", help="serve a directory of sealed packages over HTTP",
        argument_default=argparse.SUPPRESS,
        description="Serve ROOT over HTTP. Every option can also be set in a TOML file "
        "(--config; keys are the option names without '--'); the command line wins.",
    )
    p.add_argument(  # no type=: argparse would turn the suppressed default into a Path
        "root", nargs="?",
        help="package directory (default: the user data dir, with the bundled example sealed)",
    )
    p.add_argument("--config", type=Path, metavar="TOML",
                   help="read options from this TOML file (see docs/SERVER.md)")
    p.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int_at_least(0, "--port", 65535),
                   help="TCP port (default: 8000)")
    p.add_argument("--ledger", metavar="URL", help="sqlite:///path or postgresql://... "
                   "(default: ROOT/.auraseal/ledger.sqlite3)")
    p.add_argument("--ledger-jsonl", type=Path, metavar="FILE", help="append-only JSONL mirror")
    p.add_argument(
        "--trusted-key", type=input_path, action="append", metavar="PUB",
        help="accept publishes signed by this key (repeat; default: ROOT's own publisher key)",
    )
    p.add_argument("--threshold", type=int_at_least(1, "--threshold"), metavar="K",
                   help="distinct trusted signatures needed (default: 1)")
    p.add_argument("--publish-token-file", type=input_path, metavar="F",
                   help="SHA-256 hashes of bearer tokens allowed to publish")
    p.add_argument("--max-upload", type=_size, metavar="SIZE",
                   help="largest publish upload (default: 1G)")
    p.add_argument("--scrub-interval", metavar="DURATION",
                   help="how often the store is scrubbed (default: 1h)")
    p.add_argument("--commit-interval", metavar="DURATION", help="ledger block timer (default: 5m)")
    p.add_argument("--expiry-warning", metavar="DURATION",
                   help="log an expiry_warning for manifests expiring within this (default: 7d)")
    p.add_argument("--workers", type=int_at_least(1, "--workers"), metavar="N",
                   help="worker processes (default: 1)")
    p.add_argument("--server", choices=("granian", "uvicorn"),
                   help="the ASGI server that runs the app (default: granian)")
    p.add_argument("--timestamp-key", type=key_source, metavar="KEY",
                   help="online key (file or pkcs11: URI) that keeps each package's "
                   "timestamp.json signed (docs/KEYS.md)")
    p.add_argument("--timestamp-expires", metavar="DURATION",
                   help="lifetime of each timestamp, re-signed at a quarter of it (default: 1d)")
    add_pin_args(p, default=argparse.SUPPRESS)
    p.add_argument("--witness-url", action="append", metavar="URL",
                   help="submit each new ledger checkpoint to this tlog-witness (base URL; "
                   "repeat) and serve it with the cosignatures (docs/LEDGER.md)")
    p.add_argument("--integrity-policy", choices=("enforce", "report-only"),
                   help="send Integrity-Policy(-Report-Only) on HTML; reports go to /reports")
    p.add_argument("--example", action="store_true",
                   help="seal the bundled example site into ROOT if it holds no package")
    p.add_argument("--log-format", choices=("text", "json"),
                   help="access and event lines on stderr as text (default) or JSON lines")
    p.add_argument("--no-access-log", dest="access_log", action="store_false",
                   help="no line per request (events are still logged)")
    p.set_defaults(handler=cmd_serve, serve_parser=p)

    n = sub.add_parser("nginx-conf", help="print an nginx config serving ROOT statically")
    n.add_argument("root", type=input_dir)
    n.add_argument("--server-name", default="_")
    n.add_argument("--listen", type=listen_address, default="80", help="port or address:port")
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


def _file_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Config-file keys (option names without ``--``; ``root``) -> their actions."""
    out: dict[str, argparse.Action] = {}
    for a in parser._actions:
        if a.dest in ("help", "config"):
            continue
        names = [o.lstrip("-") for o in a.option_strings if o.startswith("--")]
        for name in names or [a.dest]:
            out[name] = a
    return out


def _convert(a: argparse.Action, key: str, value: Any, where: str, base: Path) -> Any:
    if a.nargs == 0:  # a switch: true = given
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false", where)
        return a.const if value else None
    if isinstance(a, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_convert_one(a, key, v, where, base) for v in items]
    return _convert_one(a, key, value, where, base)


def _convert_one(a: argparse.Action, key: str, value: Any, where: str, base: Path) -> Any:
    # paths in the file are relative to the file (their existence is checked at start-up)
    kind = Path if a.dest == "root" or a.type in (input_path, input_dir) else a.type
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{key} must be a string or a number", where)
    out: Any
    if kind is int or (kind is _size and isinstance(value, int)):
        if not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer", where)
        out = value
    elif kind is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string", where)
        path = Path(value).expanduser()
        out = path if path.is_absolute() else base / path  # relative to the file
    elif callable(kind):
        if isinstance(value, float):
            raise ConfigError(f"{key} must be a string or an integer", where)
        try:
            out = kind(str(value))
        except UsageError as exc:
            if exc.what.startswith("not an integer"):
                raise ConfigError(f"{key} must be an integer", where) from exc
            raise ConfigError(f"{key}: {exc.what}", where) from exc
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ConfigError(f"{key}: {exc}", where) from exc
    elif not isinstance(value, str):
        raise ConfigError(f"{key} must be a string", where)
    else:
        out = value
    if a.choices is not None and out not in a.choices:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, a.choices))}", where)
    return out


def load_config_file(path: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Options from a ``serve.toml`` as parsed values keyed by ``dest``.

    Keys are ``parser``'s long option names without ``--`` (and ``root``);
    an unknown key, a wrong type or a bad value is a :class:`ConfigError`
    naming the file and key. Relative paths are relative to the file's directory.
    """
    try:
        raw = tomllib.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError("no such config file", str(path)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", str(path)) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", str(path)) from exc
    actions = _file_actions(parser)
    base = Path(path).resolve().parent
    out: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{path}: {key}"
        a = actions.get(key)
        if a is None:
            raise ConfigError(f"unknown key {key!r}", str(path))
        v = _convert(a, key, value, where, base)
        if v is not None:
            out[a.dest] = v
    return out


def _serve_options(args: argparse.Namespace) -> argparse.Namespace:
    """Defaults, then ``--config`` file values, then the command line."""
    given = {k: v for k, v in vars(args).items() if k != "serve_parser"}
    if isinstance(given.get("root"), str):
        given["root"] = Path(given["root"])
    from_file: dict[str, Any] = {}
    if given.get("config") is not None:
        from_file = load_config_file(given["config"], args.serve_parser)
    return argparse.Namespace(**{**SERVE_DEFAULTS, **from_file, **given})


def _check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise UsageError(f"port must be 1..65535, not {port}", "--port")


def _resolve_host(host: str) -> str:
    """``host`` as a numeric address (granian binds IP literals only)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"cannot resolve host {host!r}", "--host") from exc
    return str(infos[0][4][0])


def _bind_check(host: str, port: int) -> socket.socket:
    """Bind ``host:port`` with a plain socket (SO_REUSEADDR, never SO_REUSEPORT):
    a port in use by anyone, including another granian sharing it with
    SO_REUSEPORT, fails here instead of being silently shared."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise NetworkError(f"cannot listen: {exc.strerror or exc}", where) from exc
    return sock


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"[{host}]" if ":" in host else host


def _make_log(fmt: str, access: bool) -> ServerLog:
    from auraseal.server.logs import ServerLog  # noqa: PLC0415

    return ServerLog(sys.stderr, fmt, access=access)


def worker_app() -> Starlette:
    """Factory for worker processes (granian, ``uvicorn --workers N``): the
    configuration and log settings come from the parent through the environment."""
    from auraseal.server.app import create_app  # noqa: PLC0415
    from auraseal.server.defaults import config_from_env  # noqa: PLC0415

    fmt, _, access = os.environ.get(LOG_ENV, "text,1").partition(",")
    return create_app(config_from_env(), log=_make_log(fmt, access != "0"))


def _check_startup(config: ServerConfig) -> None:
    """Everything a worker would open, opened once here, so a bad token file or
    ledger is one error line from the parent instead of a worker's traceback."""
    from auraseal.server.ledger_port import open_port  # noqa: PLC0415
    from auraseal.server.publish import TokenSet  # noqa: PLC0415

    TokenSet.load(config.publish_token_file)
    try:
        port = open_port(config)
    except AuraSealError:
        raise
    except Exception as exc:
        # a driver error (e.g. PostgreSQL unreachable) that the ledger let through
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise NetworkError(f"cannot open the ledger: {msg}", "--ledger") from exc
    if port is not None:
        port.close()


def cmd_serve(args: argparse.Namespace) -> int:
    require("server", "serve", ("starlette", "anyio"))
    from auraseal.server.config import ServerConfig  # noqa: PLC0415
    from auraseal.server.defaults import (  # noqa: PLC0415
        EXAMPLE_NAME,
        ensure_example,
        local_publisher_key,
        publisher_key_path,
    )
    from auraseal.server.state import prepare_root  # noqa: PLC0415
    from auraseal.server.store import PackageStore  # noqa: PLC0415

    opts = _serve_options(args)
    require("server", "serve", (opts.server,))
    _check_port(opts.port)
    if opts.workers < 1:
        raise UsageError("--workers must be at least 1", "--workers")
    host = _resolve_host(opts.host)
    scrub = parse_duration(opts.scrub_interval, "--scrub-interval").total_seconds()
    commit = parse_duration(opts.commit_interval, "--commit-interval").total_seconds()
    warn = parse_duration(opts.expiry_warning, "--expiry-warning").total_seconds()
    log = _make_log(opts.log_format, opts.access_log)
    root: Path = opts.root or _default_root()
    if (opts.root is None or opts.example) and ensure_example(root):
        log.event("example_sealed", {"root": str(root), "package": EXAMPLE_NAME})
    if not root.is_dir():
        raise UsageError("ROOT is not a directory", str(root))
    policy = trust_policy(opts)
    keys = tuple(policy.keys) if policy is not None else ()
    if not keys:
        own = local_publisher_key(root)
        keys = (own,) if own is not None else ()
    config = ServerConfig(
        root=root,
        host=host,
        port=opts.port,
        ledger_url=opts.ledger,
        ledger_jsonl=opts.ledger_jsonl,
        trusted_keys=keys,
        threshold=opts.threshold,
        publish_token_file=opts.publish_token_file,
        max_upload_bytes=opts.max_upload,
        scrub_interval=scrub,
        commit_interval=commit,
        expiry_warning=warn,
        integrity_policy=opts.integrity_policy,
        witness_urls=tuple(opts.witness_url),
    )
    _check_startup(config)
    sock = _bind_check(host, opts.port)
    # Start-up work on ROOT happens once, here, before any worker starts
    # (workers then find nothing left to adopt or clean).
    prepare_root(PackageStore(root, config.keep_versions))
    if opts.timestamp_key is not None:
        from auraseal.server.freshness import TimestampKeeper  # noqa: PLC0415

        TimestampKeeper(
            root, load_signers(opts, [opts.timestamp_key]),
            lifetime=parse_duration(opts.timestamp_expires, "--timestamp-expires"),
        ).start()
    url = f"http://{_url_host(host)}:{opts.port}"
    start: dict[str, Any] = {"root": str(root), "url": url + "/", "server": opts.server,
                             "workers": opts.workers}
    pub = Path(str(publisher_key_path(root)) + ".pub")
    if (root / EXAMPLE_NAME).is_dir() and pub.is_file():
        start["fetch"] = (f"auraseal fetch {url}/packages/{EXAMPLE_NAME} -o {EXAMPLE_NAME}-copy"
                          f" --trusted-key {pub.resolve()}")
    if opts.log_format == "text":
        print(f"auraseal: serving {root} on {url}/", file=sys.stderr, flush=True)
        if "fetch" in start:
            print(f"auraseal: fetch the example with: {start['fetch']}", file=sys.stderr,
                  flush=True)
    else:
        log.event("serving", start)
    return _run_server(opts, config, log, sock)


def _default_root() -> Path:
    from auraseal.server.defaults import default_root  # noqa: PLC0415

    return default_root()


def _run_server(
    opts: argparse.Namespace, config: ServerConfig, log: ServerLog, sock: socket.socket
) -> int:
    from auraseal.server.defaults import CONFIG_ENV, config_to_env  # noqa: PLC0415

    os.environ[CONFIG_ENV] = config_to_env(config)
    os.environ[LOG_ENV] = f"{opts.log_format},{int(opts.access_log)}"
    if opts.server == "granian":
        from granian import Granian  # noqa: PLC0415
        from granian.constants import Interfaces  # noqa: PLC0415
        from granian.log import LogLevels  # noqa: PLC0415

        sock.close()  # granian binds itself (with SO_REUSEPORT: hence the check above)
        Granian(
            f"{__name__}:worker_app", address=config.host, port=config.port,
            interface=Interfaces.ASGI, workers=opts.workers, factory=True, log_access=False,
            log_level=LogLevels.warning,
        ).serve()
        return 0
    import uvicorn  # noqa: PLC0415

    common: dict[str, Any] = {"log_level": "warning", "access_log": False,
                              "server_header": False, "proxy_headers": False}
    if opts.workers > 1:
        sock.close()
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=opts.workers,
                    host=config.host, port=config.port, **common)
        return 0
    from auraseal.server.app import create_app  # noqa: PLC0415

    sock.listen(2048)
    server = uvicorn.Server(uvicorn.Config(create_app(config, log=log), **common))
    server.run(sockets=[sock])
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
        emit(args, {"output": str(args.output)}, None)
    elif args.json:
        emit(args, {"output": None, "config": text})
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
