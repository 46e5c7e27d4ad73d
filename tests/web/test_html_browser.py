"""The seed-style hazard and its fix, in real Chromium.

A browser skips an integrity token whose algorithm it does not know and then
loads the resource unverified: the seed's ``integrity="auraseal-…"`` tags run
tampered code. After ``auraseal html`` the same page is protected natively,
and a tag's ``data-fallback-url`` is served through the loader.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import Origin
from .webpages import RECORDER, auraseal, blank_page, events, ran, script, serve_loader

pytestmark = pytest.mark.browser

GOOD = script("good")
EVIL = script("EVIL")


def seed_page(src: str, integrity: str, fallback: str | None = None) -> str:
    fb = f'\n        data-fallback-url="{fallback}"' if fallback else ""
    return f"""<!DOCTYPE html>
<html>
<head>
    <meta charset="UTF-8">
    <title>AuraSeal Integrity Loading</title>
    {RECORDER}
    <script
        src="{src}"
        integrity="{integrity}"
        crossorigin="anonymous"{fb}>
    </script>
</head>
<body><p>seed 000 section 4</p></body>
</html>
"""


def auraseal_html(tmp_path: Path, text: str, *extra: str) -> str:
    src = tmp_path / "in.html"
    out = tmp_path / "out.html"
    src.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "auraseal", "html", str(src), "-o", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return out.read_text()


def collect_console(page: Any) -> list[str]:
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    return messages


def test_seed_style_tag_runs_tampered_script_and_rewrite_blocks_it(
    page: Any, site: Origin, cdn: Origin, tmp_path: Path
) -> None:
    url = cdn.put("/core.js", EVIL)  # the CDN copy was tampered with
    raw = seed_page(url, auraseal(GOOD))

    # The hazard: Chromium ignores the unknown "auraseal-" token and runs it.
    page.goto(site.put("/raw.html", raw))
    assert ran(page) == ["EVIL"]

    rewritten = auraseal_html(tmp_path, raw)
    assert 'integrity="sha512-' in rewritten and f'data-auraseal-integrity="{auraseal(GOOD)}"' \
        in rewritten
    console = collect_console(page)
    page.goto(site.put("/fixed.html", rewritten))
    page.wait_for_load_state("load")
    assert ran(page) == []
    assert any("integrity" in m and "blocked" in m for m in console), console

    # and the genuine script still runs through the rewritten tag
    cdn.put("/core.js", GOOD)
    page.goto(site.url("/fixed.html"))
    assert ran(page) == ["good"]


def test_rewrite_computes_local_integrity_then_blocks_a_tampered_copy(
    page: Any, site: Origin, tmp_path: Path
) -> None:
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "app.js").write_bytes(GOOD)
    page_text = f"""<!DOCTYPE html><html><head><meta charset="utf-8">{RECORDER}
<script src="js/app.js"></script></head><body></body></html>"""
    rewritten = auraseal_html(tmp_path, page_text, "--root", str(tmp_path))
    site.put("/js/app.js", GOOD)
    page.goto(site.put("/index.html", rewritten))
    assert ran(page) == ["good"]
    site.put("/js/app.js", EVIL)  # the server's copy is replaced afterwards
    page.goto(site.url("/index.html"))
    page.wait_for_load_state("load")
    assert ran(page) == []


def test_rewritten_fallback_goes_through_the_loader(
    page: Any, site: Origin, cdn: Origin, mirror: Origin, tmp_path: Path
) -> None:
    primary = cdn.put("/distributed.js", EVIL)
    backup = mirror.put("/distributed.js", GOOD)
    raw = seed_page(primary, auraseal(GOOD, script("secondary")), fallback=backup)
    rewritten = auraseal_html(tmp_path, raw)
    assert "data-auraseal-loader" in rewritten and " defer" in rewritten
    serve_loader(site)
    page.goto(site.put("/fb.html", rewritten))
    page.wait_for_function("document.querySelector('script[data-fallback-url]')"
                           ".dataset.aurasealState === 'verified'")
    assert ran(page) == ["good"]
    [fb] = events(page, "fallback")
    assert fb["url"] == primary and fb["next"] == backup and fb["reason"] == "native-error"
    [ok] = events(page, "verified")
    assert ok["url"] == backup and ok["fallback"] is True
    assert cdn.hits["/distributed.js"] == 1 and mirror.hits["/distributed.js"] == 1

    # both copies tampered: nothing runs, auraseal:blocked fires
    mirror.put("/distributed.js", script("EVIL2"))
    page.goto(site.url("/fb.html"))
    page.wait_for_function("document.querySelector('script[data-fallback-url]')"
                           ".dataset.aurasealState === 'blocked'")
    assert ran(page) == []
    [bl] = events(page, "blocked")
    assert bl["url"] == primary and [a["url"] for a in bl["attempts"]] == [primary, backup]


def test_loader_reports_seed_tags_the_browser_already_ran(
    page: Any, site: Origin, cdn: Origin
) -> None:
    url = cdn.put("/core.js", EVIL)
    serve_loader(site)
    raw = seed_page(url, auraseal(GOOD)).replace(
        "</head>", '<script type="module" src="/auraseal-loader.js"></script></head>'
    )
    page.goto(site.put("/raw-loader.html", raw))
    page.wait_for_function("window.__events.length > 0")
    assert ran(page) == ["EVIL"]  # the loader cannot take back what already ran...
    [ev] = events(page, "unverified")  # ...but it says so
    assert ev["url"] == url and ev["reason"] == "ran-before-loader"


def test_rewritten_stylesheet_fallback(page: Any, site: Origin, cdn: Origin, mirror: Origin,
                                       tmp_path: Path) -> None:
    good = b"#box { color: rgb(4, 5, 6); }\n"
    primary = cdn.put("/s.css", b"#box { color: rgb(255, 0, 0); }\n")
    backup = mirror.put("/s.css", good)
    raw = f"""<!DOCTYPE html><html><head><meta charset="utf-8">{RECORDER}
<link rel="stylesheet" href="{primary}" integrity="{auraseal(good)}"
      data-fallback-url="{backup}"></head><body><p id="box">x</p></body></html>"""
    rewritten = auraseal_html(tmp_path, raw)
    assert "data-auraseal-loader" in rewritten
    serve_loader(site)
    page.goto(site.put("/css.html", rewritten))
    page.wait_for_function("document.querySelector('link[data-fallback-url]')"
                           ".dataset.aurasealState === 'verified'")
    color = "getComputedStyle(document.getElementById('box')).color"
    assert page.evaluate(color) == "rgb(4, 5, 6)"
    [fb] = events(page, "fallback")
    assert fb["url"] == primary and fb["reason"] == "native-error"


def test_svg_script_href_and_parser_hidden_scripts_run_in_chromium_until_rewritten(
    page: Any, site: Origin, tmp_path: Path
) -> None:
    """What the rewriter models is what Chromium does: these tags run code."""
    site.put("/svg.js", script("SVG"))
    page.goto(site.put("/svg.html", blank_page(body='<svg><script href="/svg.js"></script></svg>')))
    page.wait_for_function("window.__ran.length > 0")
    assert ran(page) == ["SVG"]  # an SVG script loads code, and it cannot carry SRI
    src = tmp_path / "svg.html"
    text = blank_page(body='<svg><script href="svg.js"></script></svg>')
    src.write_text(text)
    line = text[: text.index("<svg>")].count("\n") + 1
    (tmp_path / "svg.js").write_bytes(script("SVG"))
    refused = subprocess.run([sys.executable, "-m", "auraseal", "html", str(src)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and f"{src}:{line}: <script href='svg.js'>" in refused.stderr

    # tags html.parser alone would take for comment / script text; the CDN copy is evil
    hidden = ('<!-- a --!><script src="a.js"></script>'
              '<script>window.__ran.push("inline");</script x><script src="b.js"></script>')
    (tmp_path / "a.js").write_bytes(GOOD)
    (tmp_path / "b.js").write_bytes(GOOD)
    site.put("/a.js", EVIL)
    site.put("/b.js", EVIL)
    raw = blank_page(head=hidden)
    page.goto(site.put("/hidden.html", raw))
    assert ran(page) == ["EVIL", "inline", "EVIL"]
    rewritten = auraseal_html(tmp_path, raw)
    assert rewritten.count('integrity="sha512-') == 2
    page.goto(site.put("/hidden-fixed.html", rewritten))
    assert ran(page) == ["inline"]  # both tampered copies blocked by the browser
