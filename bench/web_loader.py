"""Loader vs the browser's native SRI, in Debian's headless Chromium.

Loads the same script (1 MiB and 16 MiB of JavaScript) from a loopback HTTP
server, over and over, two ways:

* native: ``<script src integrity="sha512-…" crossorigin>`` (the browser
  fetches, hashes and runs it: the peer);
* native signature: ``<script src integrity="ed25519-<key>" crossorigin>``
  with the ``Unencoded-Digest``/``Signature-Input``/``Signature`` headers
  AuraSeal signs at seal time (issue 12: the browser hashes the body and
  verifies one Ed25519 signature);
* loader: ``loadScript(url, "auraseal-sha512-…")`` (fetch, WebCrypto
  SHA-512, Blob URL, run).

Prints the median time per load and the throughput, and the ratios to
native hash SRI.

    .venv/bin/python bench/web_loader.py [--runs 7]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import statistics
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from playwright.sync_api import sync_playwright

from auraseal.httpsig import sign_digest
from auraseal.integrity import sri_token
from auraseal.signing import SigningKey
from auraseal.web import loader_bytes

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

PAGE = b"""<!DOCTYPE html><html><head><meta charset="utf-8">
<script>window.__n = 0;</script></head><body></body></html>"""

NATIVE = """async ([url, sri]) => {
  const t0 = performance.now();
  await new Promise((ok, bad) => {
    const s = document.createElement("script");
    s.src = url; s.integrity = sri; s.crossOrigin = "anonymous";
    s.onload = ok; s.onerror = bad;
    document.head.appendChild(s);
  });
  return performance.now() - t0;
}"""

LOADER = """async ([url, integ]) => {
  const m = await import("/auraseal-loader.js");
  const t0 = performance.now();
  await m.loadScript(url, integ);
  return performance.now() - t0;
}"""


def script_of(size: int) -> bytes:
    line = b"// " + b"x" * 76 + b"\n"
    body = line * (size // len(line))
    return body + b"window.__n += 1;\n"


def serve(
    files: dict[str, bytes], headers: dict[str, dict[str, str]]
) -> tuple[ThreadingHTTPServer, str]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_GET(self) -> None:
            data = files.get(self.path.split("?")[0])
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            ctype = "text/html" if self.path.endswith(".html") else "text/javascript"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Access-Control-Allow-Origin", "*")
            for k, v in headers.get(self.path.split("?")[0], {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def ensure_chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True)
        path = shutil.which("chromium")
    assert path is not None
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    sizes = {"1 MiB": 1 << 20, "16 MiB": 16 << 20}
    files = {"/index.html": PAGE, "/auraseal-loader.js": loader_bytes()}
    headers: dict[str, dict[str, str]] = {}
    key = SigningKey.generate()
    ed = "ed25519-" + base64.b64encode(key.public.raw).decode()
    for size in sizes.values():
        files[f"/{size}.js"] = files[f"/sig-{size}.js"] = script_of(size)
        sigs = sign_digest(sri_token("sha512", hashlib.sha512(script_of(size)).digest()), [key])
        assert sigs is not None
        headers[f"/sig-{size}.js"] = dict(sigs.headers())
    srv, base = serve(files, headers)
    path = ensure_chromium()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=path, args=FLAGS)
            version = browser.version
            print(f"Chromium {version}, {args.runs} runs each, median; loopback HTTP")
            print(f"{'size':>7} {'native hash SRI':>20} {'native signature SRI':>22} "
                  f"{'auraseal loader':>20} {'sig/hash':>9} {'loader/hash':>12}")
            for name, size in sizes.items():
                data = files[f"/{size}.js"]
                digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
                times: dict[str, list[float]] = {"native": [], "sig": [], "loader": []}
                page = browser.new_page()
                page.goto(base + "/index.html")
                page.evaluate("async () => { await import('/auraseal-loader.js'); }")
                for i in range(args.runs + 1):  # first round warms up
                    url = f"{base}/{size}.js?i={i}"
                    tn = page.evaluate(NATIVE, [url, f"sha512-{digest}"])
                    ts = page.evaluate(NATIVE, [f"{base}/sig-{size}.js?i={i}", ed])
                    tl = page.evaluate(LOADER, [url + "&l", f"auraseal-sha512-{digest}"])
                    if i:
                        times["native"].append(tn)
                        times["sig"].append(ts)
                        times["loader"].append(tl)
                assert page.evaluate("window.__n") == 3 * (args.runs + 1)
                page.close()
                mn = statistics.median(times["native"])
                ms = statistics.median(times["sig"])
                ml = statistics.median(times["loader"])
                mb = len(data) / (1 << 20)
                print(
                    f"{name:>7} {mn:8.1f} ms {mb / mn * 1000:6.0f} MiB/s "
                    f"{ms:10.1f} ms {mb / ms * 1000:6.0f} MiB/s "
                    f"{ml:8.1f} ms {mb / ml * 1000:6.0f} MiB/s {ms / mn:8.2f}x {ml / mn:11.2f}x"
                )
            browser.close()
    finally:
        srv.shutdown()
        srv.server_close()


if __name__ == "__main__":
    main()
