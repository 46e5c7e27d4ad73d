"""Helpers shared by the browser tests: script bodies, integrity strings, pages."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from auraseal.web import loader_bytes

#: Installed by every test page: records AuraSeal events and which scripts ran.
RECORDER = """<script>
window.__ran = [];
window.__events = [];
for (const t of ["auraseal:verified", "auraseal:fallback", "auraseal:blocked",
                 "auraseal:unverified"]) {
  document.addEventListener(t, (e) => {
    window.__events.push(Object.assign({type: t}, JSON.parse(JSON.stringify(e.detail))));
  });
}
</script>"""


def script(tag: str) -> bytes:
    """A script that records that it ran under ``tag``."""
    return f'window.__ran.push("{tag}");\n'.encode()


def sri(data: bytes, alg: str = "sha512") -> str:
    return f"{alg}-" + base64.b64encode(hashlib.new(alg, data).digest()).decode()


def auraseal(primary: bytes, secondary: bytes | None = None) -> str:
    """AuraSeal string computed independently of auraseal.integrity."""
    s = "auraseal-sha512-" + base64.b64encode(hashlib.sha512(primary).digest()).decode()
    if secondary is not None:
        s += "-" + base64.b64encode(hashlib.sha512(secondary).digest()).decode()
    return s


def blank_page(head: str = "", body: str = "", loader: str = "/auraseal-loader.js") -> str:
    """A page with the event recorder; ``call`` imports the loader from ``loader``."""
    where = f"<script>window.__loaderUrl = {json.dumps(loader)};</script>"
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8">{RECORDER}{where}{head}</head>'
        f"<body>{body}</body></html>"
    )


def serve_loader(origin: Any) -> str:
    return str(origin.put("/auraseal-loader.js", loader_bytes()))


CALL = """async ([fn, args]) => {
  const m = await import(window.__loaderUrl || "/auraseal-loader.js");
  try {
    const r = await m[fn](...args);
    return {ok: true, url: r && r.url, loaded: r && r.loaded, keyids: r && r.keyids};
  } catch (e) {
    return {ok: false, name: e.name, reason: e.reason, message: e.message,
            attempts: e.attempts || null};
  }
}"""


def call(page: Any, fn: str, *args: Any) -> dict[str, Any]:
    """Call ``fn(*args)`` of the loader inside the page; return a summary."""
    result: dict[str, Any] = page.evaluate(CALL, [fn, list(args)])
    return result


def ran(page: Any) -> list[str]:
    return list(page.evaluate("window.__ran"))


def events(page: Any, kind: str | None = None) -> list[dict[str, Any]]:
    evs: list[dict[str, Any]] = page.evaluate("window.__events")
    return [e for e in evs if kind is None or e["type"] == f"auraseal:{kind}"]
