"""Build the Go interop checker (tests/ledger/go/aurasealgo) with Debian's Go and
golang.org/x/mod (``scripts/setup`` installs both).  Missing Go fails loudly."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

GO_SRC = Path(__file__).parent / "go" / "aurasealgo" / "main.go"
GOCODE = Path("/usr/share/gocode")


def build_go_checker(tmp: Path) -> Path:
    """``GO111MODULE=off GOPATH=<tmp>:/usr/share/gocode go build`` of aurasealgo."""
    go = shutil.which("go")
    if go is None or not (GOCODE / "src/golang.org/x/mod/sumdb/tlog").is_dir():
        raise RuntimeError(
            "Go and golang.org/x/mod are required for the interop tests: run scripts/setup "
            "(Debian packages golang-go golang-golang-x-mod-dev)")
    src = tmp / "src" / "aurasealgo"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copy(GO_SRC, src / "main.go")
    out = tmp / "aurasealgo"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{tmp}:{GOCODE}",
           "GOFLAGS": "", "CGO_ENABLED": "0"}
    res = subprocess.run([go, "build", "-o", str(out), "aurasealgo"], cwd=tmp, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"go build failed:\n{res.stdout}\n{res.stderr}")
    return out


def run_go(tool: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(tool), *args], input=stdin, capture_output=True, timeout=120,
                          check=False)
