"""The explicit event sink: the library writes a ledger only through a sink it is
given; the CLI builds that sink from ``$AURASEAL_LEDGER`` / the config file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from auraseal.cli import main as cli_main
from auraseal.events import ListSink
from auraseal.ledger import open_ledger
from auraseal.manifest import MANIFEST_NAME
from auraseal.sealing import open_package, repair, repair_path, seal_tree, unseal

SRC = Path(__file__).resolve().parents[1] / "src" / "auraseal"


def _tree(root: Path) -> Path:
    root.mkdir()
    (root / "a.txt").write_bytes(b"hello ledger\n" * 500)
    (root / "b.bin").write_bytes(bytes(range(256)) * 40)
    return root


def _ledger_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every way a ledger used to be switched on by the environment / config file."""
    db = tmp_path / "env-ledger.db"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[ledger]\nurl = "sqlite://{tmp_path / "cfg-ledger.db"}"\n')
    monkeypatch.setenv("AURASEAL_LEDGER", f"sqlite://{db}")
    monkeypatch.setenv("AURASEAL_LEDGER_JSONL", str(tmp_path / "env-ledger.jsonl"))
    monkeypatch.setenv("AURASEAL_CONFIG", str(cfg))
    monkeypatch.delenv("INTEGRITY_HMAC_SECRET", raising=False)
    return db


def _ledger_files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if "ledger" in p.name and
                  p.suffix in (".db", ".jsonl"))


def test_library_seal_and_repair_write_no_ledger_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$AURASEAL_LEDGER set in os.environ: seal_tree / repair / repair_path (the
    library) write no ledger; a sink passed in gets the events instead."""
    _ledger_env(tmp_path, monkeypatch)
    src = _tree(tmp_path / "src")
    seal_tree(src, tmp_path / "pkg")
    (tmp_path / "pkg" / "a.txt").write_bytes(b"damaged")
    with open_package(tmp_path / "pkg") as pkg:
        assert repair(pkg).rewritten == ["a.txt"]
    repair_path(tmp_path / "pkg")
    with open_package(tmp_path / "pkg") as pkg:
        unseal(pkg, tmp_path / "out")
    assert _ledger_files(tmp_path) == []

    sink = ListSink()
    seal_tree(src, tmp_path / "pkg2", events=sink)
    (tmp_path / "pkg2" / "b.bin").write_bytes(b"damaged")
    repair_path(tmp_path / "pkg2", events=sink)
    with open_package(tmp_path / "pkg2") as pkg:
        unseal(pkg, tmp_path / "out2", events=sink)
    assert [t for t, _ in sink.events] == ["package.seal", "package.repair", "package.unseal"]
    assert sink.events[1][1]["rewritten"] == ["b.bin"]
    assert sink.events[2][1]["copied"] == 2
    assert _ledger_files(tmp_path) == []


def test_cli_seal_and_repair_record_in_the_ledger_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _ledger_env(tmp_path, monkeypatch)
    src = _tree(tmp_path / "src")
    assert cli_main(["seal", str(src), "-o", str(tmp_path / "pkg")]) == 0
    (tmp_path / "pkg" / "a.txt").write_bytes(b"damaged")
    assert cli_main(["repair", str(tmp_path / "pkg")]) == 0
    assert cli_main(["unseal", str(tmp_path / "pkg"), "-o", str(tmp_path / "out")]) == 0
    with open_ledger(f"sqlite://{db}") as led:
        assert [e.entry_type for e in led.pending()] == [
            "package.seal", "package.repair", "package.unseal"]
    assert (tmp_path / "env-ledger.jsonl").is_file()
    assert not (tmp_path / "cfg-ledger.db").exists()  # the variable wins over the file


def test_cli_seal_records_in_the_ledger_named_by_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ledger_env(tmp_path, monkeypatch)
    monkeypatch.delenv("AURASEAL_LEDGER")
    monkeypatch.delenv("AURASEAL_LEDGER_JSONL")
    assert cli_main(["seal", str(_tree(tmp_path / "src")), "-o", str(tmp_path / "pkg")]) == 0
    with open_ledger(f"sqlite://{tmp_path / 'cfg-ledger.db'}") as led:
        assert [e.entry_type for e in led.pending()] == ["package.seal"]


def test_cli_seal_succeeds_when_the_ledger_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _ledger_env(tmp_path, monkeypatch)
    (tmp_path / "dir").mkdir()
    monkeypatch.setenv("AURASEAL_LEDGER", f"sqlite://{tmp_path / 'dir'}")
    assert cli_main(["seal", str(_tree(tmp_path / "src")), "-o", str(tmp_path / "pkg")]) == 0
    assert (tmp_path / "pkg" / MANIFEST_NAME).is_file()
    assert capsys.readouterr().err.count("auraseal: warning: ledger:") == 1


#: the only places outside the CLI (src/auraseal/cli/) that read the environment
ALLOWED_ENV_READS = {
    # `auraseal serve` hands its parsed config to the uvicorn worker processes it
    # starts through this variable (cli/_serve.py sets it): server config
    # loading, not a decision taken by the library
    ("server/defaults.py", "os.environ[CONFIG_ENV]"),
    # INTEGRITY_HMAC_SECRET: the seed's documented source of the ledger's HMAC
    # key (Ledger(secret=<env>) default). It decides whether entries are signed
    # once a caller chose to open a ledger, never whether a ledger is written.
    ("ledger/_model.py", "os.environ.get(HMAC_ENV)"),
}
_ENV_READ = re.compile(r"os\.environ(?:\.get\([^)]*\)|\[[^\]]*\])?|os\.getenv\([^)]*\)|"
                       r"\bgetenv\(|from os import [^\n]*environ")


def test_library_reads_no_environment_outside_the_cli() -> None:
    found = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("cli/"):
            continue
        for m in _ENV_READ.finditer(path.read_text(encoding="utf-8")):
            found.add((rel, m.group(0)))
    assert found == ALLOWED_ENV_READS
