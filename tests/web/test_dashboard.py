"""The dashboard of the real ``auraseal serve``, in Chromium with JavaScript off."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _servers import run_server

from auraseal.server.publish import new_token
from auraseal.signing import SigningKey
from auraseal.web.dashboard import CSP, render_dashboard

from .conftest import seal_package

pytestmark = pytest.mark.browser


@dataclass
class Dash:
    base: str
    root: Path
    token: str


@pytest.fixture
def dash(tmp_path: Path) -> Iterator[Dash]:
    key = SigningKey.generate()
    root = tmp_path / "root"
    root.mkdir()
    rnd = random.Random(7)
    words = [rnd.choice(["seal", "part", "ledger", "coherence", "merkle"]) for _ in range(9000)]
    seal_package(root, tmp_path / "alpha", {
        "app.js": " ".join(words).encode(),  # several parts
        "css/site.css": b"body { margin: 0 }\n",
    }, key, "alpha")
    seal_package(root, tmp_path / "beta", {"data/notes.txt": b"beta notes\n"}, key, "beta")
    token, line = new_token()
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(line + "\n")
    # healing on: one background scrub at start, blocks committed every 0.5 s
    with run_server(root, trusted_keys=(key.public,), commit_interval=0.5,
                    publish_token_file=tokens) as base:
        yield Dash(base, root, token)


def login(page: Any, dash: Dash) -> None:
    """Log in through the dashboard's own form (a plain POST, JavaScript off)."""
    page.goto(dash.base + "/")
    page.fill('input[name="token"]', dash.token)
    page.click('form[action="/login"] button')
    assert page.locator('form[action="/logout"]').count() == 1


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_dashboard_renders_and_reflects_damage(browser: Any, dash: Dash,
                                               artifacts: Path) -> None:
    ctx = browser.new_context(java_script_enabled=False, viewport={"width": 1100, "height": 900})
    page = ctx.new_page()
    try:
        login(page, dash)
        resp = page.goto(dash.base + "/")
        for _ in range(100):  # the server's first background scrub
            if page.locator('#pkg-beta[data-state="intact"]').count():
                break
            page.wait_for_timeout(100)
            resp = page.goto(dash.base + "/")
        assert page.locator('#pkg-alpha[data-state="intact"]').count() == 1
        assert resp is not None and resp.status == 200
        assert resp.headers["content-security-policy"] == CSP
        assert page.locator("script").count() == 0  # nothing to run: readable without JS
        # the SRI-pinned same-origin stylesheet is allowed by the CSP and applied
        bg = page.locator("header").evaluate("e => getComputedStyle(e).backgroundColor")
        assert bg == "rgb(13, 27, 42)"
        for name in ("alpha", "beta"):
            assert page.locator(f"#pkg-{name}").count() == 1
            assert "version 1" in page.locator(f"#pkg-{name} .meta").inner_text()
        assert page.locator("#ledger-head").count() == 1
        head_before = page.locator("#ledger-head").inner_text()

        # damage beta beyond repair: the original and every part
        pkg = dash.root / "beta"
        for p in [pkg / "data/notes.txt", *sorted((pkg / "data").glob("notes.txt.part.*"))]:
            corrupt(p)
        # damage one part of alpha: recoverable from parity
        part = sorted((dash.root / "alpha").glob("app.js.part.*"))[1]
        corrupt(part)

        page.click("#pkg-beta button")  # a plain form POST, JavaScript is off
        assert page.url.startswith(dash.base + "/?verified=beta")
        beta = page.locator("#pkg-beta")
        assert beta.get_attribute("data-state") == "lost"
        assert beta.locator('tr[data-state="lost"]').count() == 1
        assert "data/notes.txt" in beta.locator('tr[data-state="lost"]').inner_text()

        page.click("#pkg-alpha button")
        alpha = page.locator("#pkg-alpha")
        assert alpha.get_attribute("data-state") == "intact"  # repaired in place
        events = page.locator("#event-rows").inner_text()
        assert "repair" in events and "app.js" in events
        assert "lost" in events and "notes.txt" in events
        assert page.locator("#ledger-head").inner_text() != head_before
        for _ in range(100):  # the next block commit signs a checkpoint
            if page.locator("pre#checkpoint").count():
                break
            page.wait_for_timeout(100)
            page.goto(dash.base + "/")
        assert page.locator("pre#checkpoint").count() == 1
        assert "blocks\n1" in page.locator("#ledger-head").inner_text() or \
            "blocks\t1" in page.locator("#ledger-head").inner_text()
        page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
    finally:
        ctx.close()


def test_verify_refuses_cross_site_posts_and_unknown_packages(dash: Dash) -> None:
    with httpx.Client(base_url=dash.base) as client:
        r = client.post("/verify/alpha", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        r = client.post("/verify/alpha", headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        r = client.post("/verify/alpha", headers={"Sec-Fetch-Site": "same-site"})
        assert r.status_code == 403
        r = client.post("/verify/alpha", headers={"Origin": dash.base})
        assert r.status_code == 401  # not logged in
        r = client.post("/login", data={"token": dash.token}, headers={"Origin": dash.base})
        assert r.status_code == 303
        r = client.post("/verify/nope", headers={"Origin": dash.base})
        assert r.status_code == 404
        r = client.post("/verify/alpha", headers={"Origin": dash.base})
        assert r.status_code == 303 and r.headers["location"].startswith("/?verified=alpha")
        r = client.get("/?verified=alpha&state=%3Cb%3Ehacked")
        assert "hacked" not in r.text and "Verified alpha: " in r.text
        r = client.get("/?verified=%3Cnope%3E")
        assert "nope" not in r.text
        r = client.get("/auraseal-loader.js")
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
        assert r.headers["content-type"].startswith("text/javascript")
        etag = r.headers["etag"]
        assert client.get("/auraseal-loader.js", headers={"If-None-Match": etag}).status_code \
            == 304


class _State:
    """A stand-in with hostile strings, for the pure renderer (no server involved)."""

    def packages(self) -> list[dict[str, Any]]:
        return [{"name": "p<b>", "version": 2, "size": 3 << 20, "files": 1, "health": {
            "state": "degraded", "checked_at": "2026-01-01T00:00:00Z",
            "counts": {"intact": 0, "recoverable": 1, "lost": 0},
            "components": [{"path": "<img src=x onerror=alert(1)>", "state": "recoverable",
                            "good": 3, "total": 4, "k": 2, "coherence": 0.75,
                            "original_ok": False}]}}]

    def ledger_head(self) -> dict[str, Any] | None:
        return {"entries": 5, "blocks": 1, "block": {"block_hash": "ab<cd"}}

    def checkpoint_text(self) -> str | None:
        return "origin\n5\n</pre><script>x</script>\n"

    def recent_events(self, limit: int = 50) -> list[dict[str, Any]]:
        return [{"type": "repair", "time": "t", "component": "<script>alert(1)</script>"}]

    async def verify_package(self, name: str, repair: bool = True) -> Any:
        raise AssertionError("not called")


def test_renderer_escapes_everything_it_shows() -> None:
    page = render_dashboard(_State())
    assert "<script" not in page and "<img" not in page and "p<b>" not in page
    assert "p&lt;b&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "3/4 parts intact (coherence 0.750); 2 needed to rebuild" in page
    assert 'data-state="recoverable"' in page and "original damaged" in page
    assert "block.block_hash" in page and "ab&lt;cd" in page
    assert "3.0 MiB" in page
