"""The server's access and event log, `auraseal serve --config`, and the
systemd unit example in docs/examples."""

from __future__ import annotations

import argparse
import configparser
import io
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from _servers import run_app

from auraseal.cli import build_parser
from auraseal.cli._serve import _serve_options, load_config_file
from auraseal.errors import ConfigError
from auraseal.server.app import create_app
from auraseal.server.config import ServerConfig
from auraseal.server.logs import ServerLog
from auraseal.signing import SigningKey

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"


def _app(root: Path, fmt: str, publisher_key: SigningKey, tokens: Path,
         **extra: object) -> tuple[io.StringIO, Callable[[], list[str]], object]:
    out = io.StringIO()
    cfg = ServerConfig(root=root, trusted_keys=(publisher_key.public,),
                       publish_token_file=tokens, healing=False, **extra)  # type: ignore[arg-type]
    app = create_app(cfg, log=ServerLog(out, fmt))
    return out, lambda: out.getvalue().splitlines(), app


def test_access_log_writes_one_text_line_per_request(
    root: Path, publisher_key: SigningKey, token: tuple[str, Path]
) -> None:
    _, lines, app = _app(root, "text", publisher_key, token[1])
    with run_app(app) as url:  # type: ignore[arg-type]
        httpx.get(f"{url}/packages/site/files/index.html")  # general path, then cached
        httpx.get(f"{url}/packages/site/files/index.html")
        httpx.head(f"{url}/packages/site/integrity-manifest.json?v=1")
        httpx.get(f"{url}/no/such/route")
    access = [ln for ln in lines() if " access " in ln]
    assert len(access) == 4, lines()
    assert access[0].split()[1:4] == ["access", "127.0.0.1", '"GET']
    assert '"GET /packages/site/files/index.html" 200 ' in access[1]
    assert '"HEAD /packages/site/integrity-manifest.json?v=1" 200 0B ' in access[2]
    assert '"GET /no/such/route" 404 ' in access[3]


def test_access_log_json_is_one_object_per_line(
    root: Path, publisher_key: SigningKey, token: tuple[str, Path]
) -> None:
    _, lines, app = _app(root, "json", publisher_key, token[1])
    with run_app(app) as url:  # type: ignore[arg-type]
        body = httpx.get(f"{url}/packages/site/files/data/blob.bin").content
        httpx.get(f"{url}/packages/site/files/data/blob.bin", headers={"range": "bytes=0-9"})
    recs = [json.loads(ln) for ln in lines()]
    access = [r for r in recs if r["log"] == "access"]
    assert [(r["method"], r["path"], r["status"], r["bytes"]) for r in access] == [
        ("GET", "/packages/site/files/data/blob.bin", 200, len(body)),
        ("GET", "/packages/site/files/data/blob.bin", 206, 10),
    ]
    assert all(isinstance(r["duration_ms"], float) and r["client"] == "127.0.0.1"
               for r in access)


def test_publish_repair_and_tamper_each_log_an_event_line(
    root: Path, publisher_key: SigningKey, token: tuple[str, Path],
    site_zip: Callable[[int], bytes],
) -> None:
    _, lines, app = _app(root, "json", publisher_key, token[1])
    auth = {"authorization": f"Bearer {token[0]}"}
    with run_app(app) as url:  # type: ignore[arg-type]
        r = httpx.put(f"{url}/packages/site", content=site_zip(2), headers=auth, timeout=60)
        assert r.status_code == 201, r.text
        part = root / "site" / "index.html.part.0"
        part.write_bytes(b"\0" * part.stat().st_size)  # tamper with a stored part
        assert httpx.post(f"{url}/packages/site/scrub", headers=auth, timeout=60
                          ).status_code == 200
    events = [r for r in map(json.loads, lines()) if r["log"] == "event"]
    kinds = [e["event"] for e in events]
    publish = events[kinds.index("publish")]
    assert publish["package"] == "site" and publish["version"] == 2
    assert publish["entry_id"]
    tamper = [e for e in events if e["event"] == "tamper"]
    assert tamper and tamper[-1]["components"] == ["index.html"]
    repair = [e for e in events if e["event"] == "repair"]
    assert repair and repair[-1]["component"] == "index.html"


def test_manifest_expiring_soon_logs_an_expiry_warning(
    root: Path, publisher_key: SigningKey, token: tuple[str, Path]
) -> None:
    _, lines, app = _app(root, "text", publisher_key, token[1],
                           expiry_warning=timedelta(days=3650).total_seconds())
    state = app.state.auraseal  # type: ignore[attr-defined]
    try:
        assert state.check_expiry("site")
        warn = [ln for ln in lines() if " event expiry_warning " in ln]
        assert len(warn) == 1 and "package=site" in warn[0] and "expired=false" in warn[0]
    finally:
        state.close()


# --- --config ------------------------------------------------------------------------


def _opts(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(["serve", *argv])
    return _serve_options(args)


def test_config_file_sets_every_option_and_the_command_line_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "serve.toml"
    cfg.write_text(
        'root = "pkgs"\nhost = "127.0.0.2"\nport = 9000\ntrusted-key = ["a.pub", "/k/b.pub"]\n'
        'max-upload = "2M"\nworkers = 3\nserver = "uvicorn"\nlog-format = "json"\n'
        "no-access-log = true\nexample = true\n"
    )
    o = _opts(["--config", str(cfg)])
    assert (o.root, o.host, o.port) == (tmp_path / "pkgs", "127.0.0.2", 9000)
    assert o.trusted_key == [tmp_path / "a.pub", Path("/k/b.pub")]
    assert (o.max_upload, o.workers, o.server) == (2 << 20, 3, "uvicorn")
    assert (o.log_format, o.access_log, o.example) == ("json", False, True)
    # the command line overrides, even when it repeats a built-in default
    o = _opts(["--config", str(cfg), "--port", "8000", "--server", "granian", "/srv/x"])
    assert (o.port, o.server, o.root, o.host) == (8000, "granian", Path("/srv/x"), "127.0.0.2")
    # without --config: the built-in defaults
    o = _opts([])
    assert (o.port, o.host, o.server, o.log_format, o.access_log) == (
        8000, "127.0.0.1", "granian", "text", True)


@pytest.mark.parametrize(("text", "words"), [
    ("prot = 8001\n", "unknown key 'prot'"),
    ("port = \"eighty\"\n", "port must be an integer"),
    ("server = \"gunicorn\"\n", "server must be one of"),
    ("example = \"yes\"\n", "example must be true or false"),
    ("max-upload = \"lots\"\n", "not a size"),
    ("help = true\n", "unknown key 'help'"),
])
def test_config_file_refuses_unknown_keys_and_bad_values(
    tmp_path: Path, text: str, words: str
) -> None:
    cfg = tmp_path / "serve.toml"
    cfg.write_text(text)
    parser = build_parser().parse_args(["serve"]).serve_parser
    with pytest.raises(ConfigError) as info:
        load_config_file(cfg, parser)
    assert words in str(info.value)
    assert str(cfg) in str(info.value)
    assert info.value.exit_code == 2


def test_unknown_config_key_exits_2_naming_key_and_file(tmp_path: Path) -> None:
    cfg = tmp_path / "serve.toml"
    cfg.write_text("port = 8001\nworkerz = 2\n")
    done = subprocess.run([sys.executable, "-m", "auraseal", "serve", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr == f"auraseal: error: {cfg}: unknown key 'workerz'\n"


# --- systemd unit ------------------------------------------------------------------


def _exec_start(unit: Path) -> list[str]:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(unit)
    return shlex.split(cp["Service"]["ExecStart"])


def test_systemd_unit_runs_a_serve_command_we_accept_with_the_example_config(
    tmp_path: Path,
) -> None:
    unit = EXAMPLES / "auraseal.service"
    argv = _exec_start(unit)
    assert Path(argv[0]).name == "auraseal" and argv[1] == "serve"
    args = build_parser().parse_args(argv[1:])  # exits 2 on a flag we do not accept
    assert args.handler.__name__ == "cmd_serve"
    # its --config is docs/examples/serve.toml installed; that file loads
    assert Path(args.config).name == "serve.toml"
    opts = load_config_file(EXAMPLES / "serve.toml", args.serve_parser)
    assert opts["root"] == Path("/srv/auraseal") and opts["log_format"] == "json"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    # systemd's own check, with ExecStart pointing at this checkout's auraseal
    ours = Path(sys.executable).with_name("auraseal")
    text = unit.read_text().replace(f"ExecStart={argv[0]} ", f"ExecStart={ours} ")
    local = tmp_path / "auraseal.service"
    local.write_text(text)
    done = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "auraseal.service" not in done.stderr, done.stderr


def test_unreadable_parts_are_logged_as_io_failure_not_recorded_lost(
    root: Path, publisher_key: SigningKey, token: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Too few parts could be *read* (the disk returns EIO for them): the
    healing logs an I/O failure naming them; it never records "lost"."""
    from auraseal.errors import StorageError  # noqa: PLC0415
    from auraseal.sealing import open_package, package  # noqa: PLC0415

    _, lines, app = _app(root, "json", publisher_key, token[1])  # adopts root/site
    with open_package(root / "site") as pkg:
        entry = next(e for e in pkg.manifest.files if e.recovery is not None)
    assert entry.recovery is not None
    (root / "site" / entry.path).unlink()
    failing = {str((root / "site" / f"{entry.path}.part.{n}").resolve())
               for n in range(entry.recovery.m + 1)}  # k - 1 readable parts left
    real_read = package._FileReader.__call__

    def eio(self: package._FileReader, off: int, length: int) -> bytes:
        if str(Path(self.path).resolve()) in failing:
            raise StorageError("cannot read: Input/output error", self.path)
        return real_read(self, off, length)

    monkeypatch.setattr(package._FileReader, "__call__", eio)
    state = app.state.auraseal  # type: ignore[attr-defined]
    try:
        health = state.scrub_package_sync("site")
    finally:
        state.close()
    events = [r for r in map(json.loads, lines()) if r["log"] == "event"]
    kinds = [e["event"] for e in events]
    assert "lost" not in kinds, events
    (comp,) = [c for c in health.components if c.path == entry.path]
    assert comp.state == "lost" and "Input/output error" in comp.io_error
    (unreadable,) = [e for e in events if e["event"] == "unreadable"]
    assert unreadable["component"] == entry.path
