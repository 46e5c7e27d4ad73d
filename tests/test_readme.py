"""The README's "Using it" commands, run verbatim and in order.

The ```sh blocks of that section are extracted (comments after ``#`` are
stripped, ``\\`` continuations joined) and each line runs in ``bash`` in one
temporary directory, with ``.venv/bin`` first on PATH and the user's
cache/data directories inside it. A line ending in ``&`` (``auraseal serve``)
is started in the background and waited for; the port 8000 the README names
is swapped for a free one. Each command must exit 0, or N when its comment
says ``exit N``; so the README cannot drift from what works.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
PORT = "8000"


def readme_commands(text: str) -> list[tuple[str, int]]:
    """(command, expected exit code) for each ```sh line of "## Using it"."""
    section = text.split("\n## Using it", 1)[1].split("\n## ", 1)[0]
    commands: list[tuple[str, int]] = []
    for block in re.findall(r"^```sh\n(.*?)^```", section, re.S | re.M):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            code, _, comment = line.partition(" #")
            if line.lstrip().startswith("#"):
                code, comment = "", line
            code = code.strip()
            if not code:
                continue
            m = re.search(r"\bexit (\d)\b", comment)
            commands.append((code, int(m.group(1)) if m else 0))
    return commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the background command exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


def test_readme_lists_the_workflow() -> None:
    words = " ".join(c for c, _ in readme_commands(README.read_text("utf-8")))
    for step in ("keygen", "seal", "publish-token", "serve", "publish", "fetch",
                 "--trusted-key", "resign", "scrub", "repair", "rollback", "html",
                 "ledger verify"):
        assert f"auraseal {step}" in words or step in words, step
    assert "example" not in words  # no placeholder hosts


def test_readme_two_commands() -> None:
    text = README.read_text("utf-8")
    block = text.split("\n## Two commands", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert len([ln for ln in block.splitlines() if ln.strip()]) == 2


def test_readme_commands_run_in_order(tmp_path: Path) -> None:
    port = _free_port()
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for var in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        env[var] = str(tmp_path / ".xdg" / var.lower())
    for var in ("AURASEAL_LEDGER", "AURASEAL_LEDGER_JSONL", "AURASEAL_TOKEN", "AURASEAL_CONFIG"):
        env.pop(var, None)
    background: list[subprocess.Popen[bytes]] = []
    commands = readme_commands(README.read_text("utf-8"))
    assert len(commands) >= 15
    try:
        for cmd, expected in commands:
            cmd = cmd.replace(f"127.0.0.1:{PORT}", f"127.0.0.1:{port}")
            cmd = cmd.replace(f"--port {PORT}", f"--port {port}")
            if cmd.endswith("&"):
                proc = subprocess.Popen(
                    ["bash", "-c", "exec " + cmd[:-1].strip()], cwd=tmp_path, env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                background.append(proc)
                _wait_for_port(port, proc)
                continue
            done = subprocess.run(
                ["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True,
                timeout=180, check=False,
            )
            assert done.returncode == expected, (cmd, done.returncode, done.stderr)
            assert "Traceback" not in done.stderr, (cmd, done.stderr)
    finally:
        for proc in background:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # pragma: no cover
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


if __name__ == "__main__":  # pragma: no cover
    for c, e in readme_commands(README.read_text("utf-8")):
        print(e, c)
    pytest.main([__file__])
