"""Every command refuses bad input the same way: one exit code per kind of
failure, one line on stderr, and with ``--json`` an ``{"error": ...}`` on stdout.

The table is keyed by the commands the parser itself defines, so a new command
without a row fails ``test_every_command_has_a_row``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from auraseal.cli import build_parser, commands, main

URL = "http://127.0.0.1:9/site"  # never contacted: every row fails before any I/O
LEDGER = ["--ledger", "sqlite:///ledger.db"]

# command -> [(argv after the command words, exit code, text in the message)]
ROWS: dict[str, list[tuple[list[str], int, str]]] = {
    "hash": [(["missing.txt"], 2, "missing.txt: no such file or directory")],
    "check": [
        (["missing.txt", "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="], 2,
         "missing.txt: no such file"),
        (["site/a.txt", "sha256-!!"], 2, "no usable integrity token"),
    ],
    "keygen": [([], 2, "required: key")],
    "manifest build": [
        (["missing"], 2, "missing: no such file"),
        (["site", "--version", "-1"], 2, "--version: must be >= 0"),
        (["site", "--name", "a/b"], 2, "--name: not a package name"),
        (["site", "--key", "missing.key"], 2, "missing.key: no such file"),
        (["site", "--jobs", "0"], 2, "--jobs: must be >= 1"),
    ],
    "manifest verify": [
        (["missing"], 2, "missing: no such file"),
        (["site", "--trusted-key", "missing.pub"], 2, "missing.pub: no such file"),
        (["site", "--threshold", "0"], 2, "--threshold: must be >= 1"),
    ],
    "resign": [
        (["missing.json", "--key", "release.key"], 2, "missing.json: no such file"),
        (["pkg", "--key", "release.key", "--version", "-3"], 2, "--version: must be >= 0"),
    ],
    "seal": [
        (["missing", "-o", "out"], 2, "missing: no such file"),
        (["site", "-o", "out", "--version", "-1"], 2, "--version: must be >= 0"),
        (["site", "-o", "out", "--name", "../evil"], 2, "--name: not a package name"),
        (["site", "-o", "out", "--name", "a/b"], 2, "--name: not a package name"),
        (["site", "-o", "out", "--part-size", "0"], 2, "--part-size: must be >= 1"),
        (["site"], 2, "required: -o/--output"),
    ],
    "unseal": [
        (["missing", "-o", "out"], 2, "missing: no such file"),
        (["pkg", "-o", "pkg/restored"], 2, "pkg/restored: the output is inside the package"),
        (["pkg", "-o", "pkg"], 2, "the output is inside the package"),
    ],
    "scrub": [(["missing"], 2, "missing: no such file")],
    "version": [(["--bogus"], 2, "unrecognized arguments: --bogus")],
    "repair": [(["missing"], 2, "missing: no such file")],
    "inspect": [(["missing"], 2, "missing: no such file")],
    "serve": [
        (["missing"], 2, "missing: ROOT is not a directory"),
        (["pkg", "--port", "-1"], 2, "--port: must be >= 0"),
        (["pkg", "--port", "70000"], 2, "--port: must be <= 65535"),
        (["pkg", "--workers", "0"], 2, "--workers: must be >= 1"),
        (["pkg", "--publish-token-file", "missing"], 2, "missing: no such file"),
    ],
    "nginx-conf": [
        (["missing"], 2, "missing: no such file"),
        (["site/a.txt"], 2, "site/a.txt: not a directory"),
        (["site", "--listen", "nowhere"], 2, "--listen: not PORT or ADDRESS:PORT"),
        (["site", "--listen", "0"], 2, "not PORT or ADDRESS:PORT"),
        (["site", "--listen", "127.0.0.1:99999"], 2, "not PORT or ADDRESS:PORT"),
    ],
    "publish-token": [([], 2, "required: file")],
    "publish": [
        (["missing", "http://127.0.0.1:9"], 2, "missing: no such file"),
        (["pkg", "http://127.0.0.1:9", "--token-file", "missing"], 2, "missing: no such file"),
        (["pkg", "http://127.0.0.1:9", "--retries", "-1"], 2, "--retries: must be >= 0"),
    ],
    "fetch": [
        ([URL, "-o", "out", "--package", "a/b"], 2, "--package: not a package name"),
        ([URL, "-o", "out", "--trusted-key", "missing.pub"], 2, "missing.pub: no such file"),
        ([URL, "-o", "out", "--jobs", "0"], 2, "--jobs: must be >= 1"),
        ([URL, "-o", "out", "--fallback", "missing"], 2, "missing: no such file"),
    ],
    "rollback": [
        (["missing"], 2, "missing: no such file"),
        (["site"], 2, "no previous version"),
    ],
    "html": [
        (["missing.html"], 2, "missing.html: no such file"),
        (["site/index.html", "--root", "missing"], 2, "missing: no such file"),
    ],
    "ledger record": [
        (["t", "--data-file", "missing.json", *LEDGER], 2, "missing.json: no such file"),
        (["t", "--data", "{", *LEDGER], 2, "not valid JSON"),
    ],
    "ledger commit": [(["--block-entries", "0", *LEDGER], 2, "--block-entries: must be >= 1")],
    "ledger verify": [
        (["--checkpoint", "missing.note", *LEDGER], 2, "missing.note: no such file"),
    ],
    "ledger show": [(["--block", "-1", *LEDGER], 2, "--block: must be >= 0")],
    "ledger proof": [
        (["--check", "missing.json", "--pub", "release.key.pub"], 2, "missing.json: no such"),
        (["x", "--size", "-1", *LEDGER], 2, "--size: must be >= 0"),
    ],
    "ledger checkpoint": [(["--key", "missing.key", *LEDGER], 2, "missing.key: no such file")],
    "ledger tiles": [([*LEDGER, "--key", "release.key"], 2, "required: --out")],
    "witness serve": [(["--log", "a=b"], 2, "required: --key")],
    "root init": [(["-o", "r.json", "--key", "missing.key"], 2, "missing.key: no such file")],
    "root rotate": [(["missing.json", "-o", "n.json"], 2, "missing.json: no such file")],
    "root sign": [(["missing.json", "--key", "release.key"], 2, "missing.json: no such file")],
    "root status": [(["missing.json"], 2, "missing.json: no such file")],
    "root pubkey": [(["missing.key", "-o", "p.pub"], 2, "missing.key: no such file")],
    "root install": [(["missing.json", "--to", "site"], 2, "missing.json: no such file")],
    "ledger consistency": [
        (["missing1", "missing2", "--pub", "release.key.pub", *LEDGER], 2,
         "missing1: no such file"),
    ],
}

CASES = [
    pytest.param(cmd, argv, code, text, id=f"{cmd}-{i}")
    for cmd, rows in ROWS.items()
    for i, (argv, code, text) in enumerate(rows)
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """site/, a key pair and a small sealed package pkg/."""
    root = tmp_path_factory.mktemp("cli-errors")
    site = root / "site"
    site.mkdir()
    (site / "a.txt").write_text("hello\n")
    (site / "index.html").write_text("<p>hi</p>\n")
    old = Path.cwd()
    os.chdir(root)
    try:
        assert main(["keygen", "release.key", "--json"]) == 0
        assert main(["seal", "site", "-o", "pkg", "--key", "release.key", "--json"]) == 0
    finally:
        os.chdir(old)
    return root


def _names(root: Path) -> list[str]:
    """What is in ``root``, but the ledger and install locks a command may keep."""
    return sorted(
        p.name for p in root.iterdir()
        if p.name != "ledger.db" and not p.name.endswith(".auraseal.lock")
    )


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_has_a_row() -> None:
    assert set(commands(build_parser())) == set(ROWS)


@pytest.mark.parametrize(("cmd", "argv", "code", "text"), CASES)
def test_bad_input_gives_one_code_and_one_line(
    cmd: str,
    argv: list[str],
    code: int,
    text: str,
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(workdir / "data"))
    before = _names(workdir)
    words = cmd.split()
    rc, out, err = _run([*words, *argv], capsys)
    assert rc == code, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("auraseal: error: "), err
    assert text in lines[0], err
    assert out == ""
    # the same with --json: the same code and line, and the error as JSON on stdout
    rc, out, err = _run([*words, *argv, "--json"], capsys)
    assert rc == code and err.splitlines() == lines
    error = json.loads(out)["error"]
    assert error["exit_code"] == code and error["what"] in lines[0]
    assert _names(workdir) == before  # nothing written, nothing half-written


def test_usage_error_with_json_anywhere_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(["--json", "seal"], capsys)
    assert rc == 2 and err.startswith("auraseal: error: ") and len(err.splitlines()) == 1
    assert json.loads(out)["error"]["type"] == "UsageError"
    rc, out, err = _run(["frobnicate", "--json"], capsys)
    assert rc == 2 and "invalid choice" in err and json.loads(out)["ok"] is False


def test_every_command_accepts_json() -> None:
    for name, parser in commands(build_parser()).items():
        assert "--json" in parser._option_string_actions, name
