"""The release team's path through the CLI: keygen, root init, serve with an
online timestamp key, fetch --root, rotate a leaked key out (exit 3 after)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _servers import free_port

from auraseal.cli import main as cli_main

from .helpers import FILES


def _auraseal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auraseal", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_cli_root_serve_timestamp_fetch_and_revoked_key(tmp_path: Path) -> None:
    k = tmp_path / "keys"
    k.mkdir()
    for name in ("k1", "k2", "k3", "ts"):
        assert cli_main(["keygen", str(k / name)]) == 0
    src = tmp_path / "src"
    for rel, data in FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    root = tmp_path / "ROOT"
    root.mkdir()
    assert cli_main(["manifest", "build", str(src), "--name", "site", "--key", str(k / "k2"),
                     "-o", str(src / "integrity-manifest.json")]) == 0
    os.rename(src, root / "site")
    r1 = tmp_path / "root-1.json"
    assert cli_main(["root", "init", "-o", str(r1), "--key", str(k / "k1"),
                     "--key", str(k / "k2"), "--threshold", "1",
                     "--timestamp-key", str(k / "ts.pub"), "--expires", "1y"]) == 0
    assert cli_main(["root", "install", str(r1), "--to", str(root)]) == 0
    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "auraseal", "serve", str(root), "--port", str(port),
         "--server", "uvicorn", "--timestamp-key", str(k / "ts"),
         "--trusted-key", str(k / "k1.pub"), "--trusted-key", str(k / "k2.pub"),
         "--trusted-key", str(k / "k3.pub")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/packages/site/files/timestamp.json").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert serve.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        cache = tmp_path / "cache"
        out = tmp_path / "out"
        got = _auraseal("fetch", f"{url}/packages/site", "-o", str(out), "--root", str(r1),
                        "--cache", str(cache), "--json")
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["version"] == 1
        # k2 leaks: root v2 drops it (signed by k1, which is in both)
        r2 = tmp_path / "root-2.json"
        assert cli_main(["root", "rotate", str(r1), "-o", str(r2), "--sign-with", str(k / "k1"),
                         "--remove-key", str(k / "k2.pub"), "--add-key", str(k / "k3.pub")]) == 0
        assert cli_main(["root", "install", str(r2), "--to", str(root)]) == 0
        # the next fetch walks to v2 and refuses the manifest signed only by k2
        got = _auraseal("fetch", f"{url}/packages/site", "-o", str(out),
                        "--cache", str(cache), "--manifest-ttl", "0")
        assert got.returncode == 3, got.stderr
        assert got.stderr.startswith("auraseal: error: ") and "Traceback" not in got.stderr
        assert (out / "index.html").read_bytes() == FILES["index.html"]
    finally:
        serve.terminate()
        serve.wait(20)
