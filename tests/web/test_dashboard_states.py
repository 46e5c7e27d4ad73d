"""Screenshots of the dashboard healthy, with a package about to expire, and damaged
(Chromium, JavaScript off), written to ``test-artifacts/``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from _servers import run_server

from auraseal.manifest import MANIFEST_NAME, resign_manifest
from auraseal.sealing import seal_tree
from auraseal.server.publish import new_token
from auraseal.signing import SigningKey

from .conftest import seal_package

pytestmark = pytest.mark.browser

AMBER_BG = "rgb(255, 248, 197)"
RED_BG = "rgb(180, 35, 24)"


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _wait_scrubbed(page: Any, base: str, selector: str) -> None:
    for _ in range(100):  # the server's first background scrub
        page.goto(base + "/")
        if page.locator(selector).count():
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"never saw {selector}")


def test_dashboard_screenshots_healthy_expiring_damaged(
    browser: Any, tmp_path: Path, artifacts: Path
) -> None:
    key = SigningKey.generate()
    root = tmp_path / "root"
    root.mkdir()
    seal_package(root, tmp_path / "alpha", {
        "app.js": b"console.log('alpha');\n" * 3000,
        "css/site.css": b"body { margin: 0 }\n",
    }, key, "alpha")
    seal_package(root, tmp_path / "beta", {"data/notes.txt": b"beta notes\n"}, key, "beta")
    token, line = new_token()
    (tmp_path / "tokens.txt").write_text(line + "\n")
    ctx = browser.new_context(java_script_enabled=False, viewport={"width": 1100, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    try:
        with run_server(root, trusted_keys=(key.public,), commit_interval=0.5,
                        publish_token_file=tmp_path / "tokens.txt") as base:
            # 1. healthy: everything intact, nothing expiring
            _wait_scrubbed(page, base, '#pkg-beta[data-state="intact"]')
            assert page.locator('.pkg[data-state="intact"][data-expiry="ok"]').count() == 2
            assert page.locator(".warn").count() == 0
            page.screenshot(path=str(artifacts / "dashboard-healthy.png"), full_page=True)

            # 2. expiring: a manifest-only publish that expires in 3 days
            data = (root / "alpha" / MANIFEST_NAME).read_bytes()
            _, soon = resign_manifest(data, [key], version=2, expires=timedelta(days=3))
            r = httpx.put(f"{base}/packages/alpha", content=soon,
                          headers={"Authorization": f"Bearer {token}",
                                   "Content-Type": "application/json"})
            assert r.status_code == 201, r.text
            page.goto(base + "/")
            alpha = page.locator("#pkg-alpha")
            assert alpha.get_attribute("data-expiry") == "expiring"
            assert "versions kept: 1, 2" in alpha.inner_text()
            warn = page.locator(".warn.expiring")
            assert warn.count() == 1 and "alpha expires soon" in warn.inner_text()
            bg = warn.evaluate("e => getComputedStyle(e).backgroundColor")
            assert bg == AMBER_BG
            page.screenshot(path=str(artifacts / "dashboard-expiring.png"), full_page=True)

            # 3. damaged: beta lost, a part of alpha damaged (repaired), gamma expired
            seal_tree(tmp_path / "beta", root / "gamma", keys=[key], name="gamma",
                      expires=timedelta(seconds=-3600))
            pkg = root / "beta"
            for p in [pkg / "data/notes.txt", *sorted((pkg / "data").glob("notes.txt.part.*"))]:
                _corrupt(p)
            _corrupt(sorted((root / "alpha").glob("app.js.part.*"))[0])
            page.goto(base + "/")
            page.fill('input[name="token"]', token)
            page.click('form[action="/login"] button')
            page.click("#pkg-beta button")
            page.click("#pkg-alpha button")
            assert page.locator("#pkg-beta").get_attribute("data-state") == "lost"
            assert page.locator("#pkg-alpha").get_attribute("data-state") == "intact"
            expired = page.locator("#pkg-gamma .expiry.expired")
            assert expired.count() == 1
            assert expired.evaluate("e => getComputedStyle(e).backgroundColor") == RED_BG
            events = page.locator("#event-rows").inner_text()
            assert "rebuilt 1 part(s)" in events and "lost" in events
            assert page.locator('#event-rows a[href^="/ledger/entries/"]').count() >= 3
            page.screenshot(path=str(artifacts / "dashboard-damaged.png"), full_page=True)
    finally:
        ctx.close()
