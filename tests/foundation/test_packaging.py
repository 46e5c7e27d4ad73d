"""Packaging: what a plain ``pip install auraseal`` runs, what needs an extra,
that every import is declared, and that start-up loads nothing heavy.

A plain install is simulated in a subprocess by a meta-path finder that makes
the extras' modules (and the browser-test ones) impossible to import, as if they
were not installed.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from _servers import free_port, stop_process, wait_listening

from auraseal._extras import EXTRAS
from auraseal.cli import COMMANDS, _leaf_parsers, build_parser

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "auraseal"
EXAMPLE = SRC / "examples" / "site"

#: not installed in a plain install (anyio: only the servers import it;
#: httptools is a core dependency: the client parses pipelined part answers)
BLOCKED = (
    "starlette", "uvicorn", "granian", "psycopg", "uvloop", "playwright", "anyio",
)

# Runs the CLI with BLOCKED unimportable; prints the exit code and whether any
# blocked module was asked for, as the last line of stdout.
DRIVER = """
import json, sys
BLOCKED = set(json.loads(sys.argv[1]))
asked = []

class Block:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            asked.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block)
from auraseal.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code or 0
sys.stdout.flush()
print("\\n" + json.dumps({"code": code, "asked": asked}))
"""


def plain(*argv: str, cwd: Path) -> tuple[int, list[str], str, str]:
    """Run ``auraseal *argv`` as a plain install would: (exit code, blocked
    modules asked for, stdout, stderr)."""
    p = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(BLOCKED), *argv],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )
    assert "Traceback" not in p.stderr, p.stderr
    out, _, last = p.stdout.rstrip("\n").rpartition("\n")
    result = json.loads(last)
    return result["code"], result["asked"], out, p.stderr


@pytest.fixture(scope="module")
def static_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """``python3 -m http.server`` serving a directory: (directory, base URL)."""
    root = tmp_path_factory.mktemp("static")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
         "--directory", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, proc=proc)
        yield root, f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def test_plain_install_runs_the_cli_without_the_extras(
    tmp_path: Path, static_host: tuple[Path, str]
) -> None:
    """help, keygen, seal, scrub, unseal, manifest verify and fetch from a
    static host work with no server, PostgreSQL or browser-test module."""
    static, base = static_host
    shutil.copytree(EXAMPLE, tmp_path / "site")
    steps: list[list[str]] = [
        ["--help"],
        ["keygen", "release.key"],
        ["seal", "site", "-o", str(static / "site"), "--key", "release.key"],
        ["scrub", str(static / "site")],
        ["unseal", str(static / "site"), "-o", "restored"],
        ["manifest", "verify", str(static / "site"), "--trusted-key", "release.key.pub"],
        ["fetch", f"{base}/site/", "-o", "installed", "--trusted-key", "release.key.pub",
         "--cache", "cache"],
    ]
    for argv in steps:
        # (httpx probes anyio and goes on without it: asked, not needed)
        code, asked, _, err = plain(*argv, cwd=tmp_path)
        assert code == 0, (argv, code, asked, err)
    for rel in ("index.html", "js/app.js"):
        want = (EXAMPLE / rel).read_bytes()
        assert (tmp_path / "restored" / rel).read_bytes() == want
        assert (tmp_path / "installed" / rel).read_bytes() == want


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["serve", "srv", "--port", "9"], "server"),
        (["ledger", "verify", "--ledger", "postgresql://127.0.0.1:9/none"], "postgres"),
    ],
)
def test_command_needing_an_extra_names_it_in_one_line(
    tmp_path: Path, argv: list[str], extra: str
) -> None:
    (tmp_path / "srv").mkdir()
    code, _, out, err = plain(*argv, cwd=tmp_path)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("auraseal: error: "), err
    assert f"pip install 'auraseal[{extra}]'" in lines[0], err


def test_help_imports_no_heavy_library() -> None:
    """``auraseal --help`` imports only the CLI's own parser: a robust proxy
    for its start-up time (bench/startup.py measures the time itself)."""
    code = (
        "import sys\n"
        "from auraseal.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('\\n' + ' '.join(sorted(sys.modules)))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(p.stdout.rstrip("\n").rpartition("\n")[2].split())
    heavy = {"httpx", "starlette", "rich", "zfec", "pyeclib", "cryptography", "zstandard",
             "uvicorn", "granian", "psycopg", "anyio", "platformdirs"}
    assert not {m for m in loaded if m.partition(".")[0] in heavy}
    assert not {m for m in loaded if m.startswith("auraseal.") and m not in {
        "auraseal.cli", "auraseal.errors", "auraseal._extras", "auraseal._version",
        "auraseal._lazy"}}


def test_help_starts_within_a_second() -> None:
    """A loose wall-clock bound only (the machine may be busy)."""
    exe = Path(sys.executable).parent / "auraseal"
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([str(exe), "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 1.0, times


def test_command_table_matches_what_the_modules_register() -> None:
    """``auraseal.cli.COMMANDS`` (which ``--help`` lists without importing the
    command modules) names every top-level command, its module and help line."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    registered = {}
    for action in sub._choices_actions:
        leaves = _leaf_parsers(sub.choices[action.dest])
        modules = {leaf.get_default("handler").__module__.rpartition(".")[2] for leaf in leaves}
        assert len(modules) == 1, (action.dest, modules)
        registered[action.dest] = (modules.pop(), action.help)
    assert registered == COMMANDS
    assert list(COMMANDS) == list(registered)  # --help lists them in the same order


def _requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")


def _src_imports() -> dict[str, set[str]]:
    """Top-level module -> the src files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.partition(".")[0], set()).add(
                    str(path.relative_to(SRC))
                )
    return found


def test_pyproject_declares_every_third_party_import_in_src() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    base = {_requirement_name(r) for r in project["dependencies"]}
    extras = {
        name: {_requirement_name(r) for r in reqs}
        for name, reqs in project["optional-dependencies"].items()
    }
    # the test extra pulls the server and PostgreSQL extras too
    assert "auraseal[server,postgres]" in project["optional-dependencies"]["test"]
    declared = base | extras["server"] | extras["postgres"]
    dists = importlib.metadata.packages_distributions()
    third_party = {
        mod: files for mod, files in _src_imports().items()
        if mod not in sys.stdlib_module_names and mod not in {"auraseal", "__future__"}
    }
    assert third_party, "no third-party import found: the scan is broken"
    undeclared = {}
    for mod, files in sorted(third_party.items()):
        provided_by = {_requirement_name(d) for d in dists.get(mod, [])}
        if not provided_by & declared:
            undeclared[mod] = (sorted(provided_by), sorted(files))
    assert not undeclared, f"imported by src but not declared in pyproject: {undeclared}"
    # an extra's modules come from that extra, not from the plain install
    for extra, modules in EXTRAS.items():
        for mod in modules:
            provided_by = {_requirement_name(d) for d in dists.get(mod, [])}
            assert provided_by & extras[extra], (extra, mod)
            assert not provided_by & base, (extra, mod)
