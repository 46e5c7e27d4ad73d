"""The HTML rewriter without a browser: exact output, idempotence, refusals."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auraseal.errors import (
    DigestMismatchError,
    MalformedIntegrityError,
    StorageError,
    UnsafePathError,
)
from auraseal.manifest import build_manifest, dump_signed
from auraseal.web import loader_bytes, loader_sri
from auraseal.web.html import rewrite_file, rewrite_html

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "web"


def b64(alg: str, data: bytes) -> str:
    return base64.b64encode(hashlib.new(alg, data).digest()).decode()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    dst = tmp_path / "site"
    shutil.copytree(FIXTURES / "site", dst)
    return dst


def test_checked_in_page_rewrites_to_checked_in_output(site: Path) -> None:
    """A silent change of the rewriter's output format breaks this test."""
    result = rewrite_file(site / "index.html", site / "out.html")
    got = (site / "out.html").read_text("utf-8").replace(loader_sri(), "LOADER-SRI")
    assert got == (FIXTURES / "expected.html").read_text("utf-8")
    assert [(c.action, c.url) for c in result.changes] == [
        ("computed", "css/site.css"),
        ("converted", "js/core.js"),
        ("converted", "/js/distributed.js"),
        ("skipped", "https://cdn.example/lib.js"),
        ("loader", "/auraseal-loader.js"),
    ]
    assert result.loader_added


def test_known_answers_dual_and_crossorigin(site: Path) -> None:
    js = (site / "js" / "distributed.js").read_bytes()
    css = (site / "css" / "site.css").read_bytes()
    out = rewrite_file(site / "index.html", site / "out.html")
    text = (site / "out.html").read_text()
    # dual → two standard tokens, computed here with hashlib, not with auraseal
    assert f'integrity="sha512-{b64("sha512", js)} sha512-{b64("sha512", css)}"' in text
    assert f'data-auraseal-integrity="auraseal-sha512-{b64("sha512", js)}-' \
           f'{b64("sha512", css)}"' in text
    assert text.count('crossorigin="anonymous"') == 4  # 3 rewritten tags + the loader
    assert out.changes[0].integrity == f"sha512-{b64('sha512', css)}"
    # the loader tag pins the shipped loader by SRI
    assert f'integrity="sha384-{b64("sha384", loader_bytes())}"' in text


def test_idempotent_on_checked_in_page(site: Path) -> None:
    rewrite_file(site / "index.html", site / "once.html")
    rewrite_file(site / "once.html", site / "twice.html")
    assert (site / "once.html").read_bytes() == (site / "twice.html").read_bytes()


def test_unchanged_bytes_outside_rewritten_tags(site: Path) -> None:
    text = (site / "index.html").read_text()
    out = rewrite_html(text, root=site).html
    # everything after </head> (inline script, text, entities) is byte-identical
    assert out[out.index("</head>"):] == text[text.index("</head>"):]


def test_refuses_file_it_cannot_read(site: Path) -> None:
    (site / "js" / "core.js").unlink()
    with pytest.raises(StorageError, match="refusing to write integrity"):
        rewrite_file(site / "index.html", site / "out.html")
    assert not (site / "out.html").exists()  # nothing written
    (site / "js" / "core.js").mkdir()  # a directory is not a readable file either
    with pytest.raises(StorageError):
        rewrite_file(site / "index.html", site / "out.html")


def test_refuses_to_bless_a_changed_file(site: Path) -> None:
    (site / "js" / "core.js").write_text("tampered();\n")
    before = (site / "index.html").read_bytes()
    with pytest.raises(DigestMismatchError):
        rewrite_file(site / "index.html")
    assert (site / "index.html").read_bytes() == before


def test_refuses_urls_leaving_root(tmp_path: Path) -> None:
    (tmp_path / "secret.js").write_text("x\n")
    (tmp_path / "www").mkdir()
    page = '<script src="../secret.js"></script>'
    with pytest.raises(UnsafePathError):
        rewrite_html(page, root=tmp_path / "www")
    with pytest.raises(UnsafePathError):
        rewrite_html('<script src="/%2e%2e/secret.js"></script>', root=tmp_path / "www")


def test_malformed_integrity_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_text("a\n")
    with pytest.raises(MalformedIntegrityError):
        rewrite_html('<script src="a.js" integrity="auraseal-sha512-vHdv5RGg9H0=">'
                     "</script>", root=tmp_path)


def test_manifest_pins_and_remote_urls(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_bytes(b"a()\n")
    manifest = build_manifest(tmp_path, name="m", base_url="https://cdn.example/pkg")
    (tmp_path / "m.json").write_bytes(dump_signed(manifest))
    page = ('<script src="a.js"></script>'
            '<script src="https://cdn.example/pkg/a.js"></script>')
    (tmp_path / "index.html").write_text(page)
    res = rewrite_file(tmp_path / "index.html", tmp_path / "out.html",
                       manifest_path=tmp_path / "m.json")
    out = (tmp_path / "out.html").read_text()
    token = "sha512-" + b64("sha512", b"a()\n")
    assert out.count(f'integrity="{token}"') == 2
    assert [c.action for c in res.changes] == ["converted", "remote"]


def test_preload_only_for_integrity_checked_destinations(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_bytes(b"a\n")
    (tmp_path / "i.png").write_bytes(b"png")
    page = ('<link rel="preload" as="script" href="a.js">'
            '<link rel="preload" as="image" href="i.png">'
            '<link rel="icon" href="i.png">')
    res = rewrite_html(page, root=tmp_path)
    assert [c.url for c in res.changes] == ["a.js"]
    assert res.html.endswith('<link rel="preload" as="image" href="i.png">'
                             '<link rel="icon" href="i.png">')


def test_base_href_to_another_host_leaves_relative_urls_remote(tmp_path: Path) -> None:
    page = '<base href="https://cdn.example/"><script src="missing.js"></script>'
    res = rewrite_html(page, root=tmp_path)
    assert res.html == page and [c.action for c in res.changes] == ["skipped"]


names = st.sampled_from(["a.js", "b.js", "s.css", "https://cdn.example/x.js"])
attr_sets = st.fixed_dictionaries(
    {},
    optional={
        "defer": st.just(None),
        "async": st.just(None),
        "crossorigin": st.sampled_from(["anonymous", "use-credentials", ""]),
        "data-fallback-url": st.sampled_from(["https://m.example/a.js", "/b.js"]),
        "id": st.text(alphabet="abc<>&\"' ", max_size=5),
    },
)


@st.composite
def pages(draw: st.DrawFn) -> str:
    chunks = []
    for _ in range(draw(st.integers(0, 5))):
        url = draw(names)
        attrs = draw(attr_sets)
        rendered = "".join(
            f" {k}" if v is None else f" {k}='{v.replace(chr(39), '&#39;')}'"
            for k, v in attrs.items()
        )
        if url.endswith(".css"):
            chunks.append(f'<link rel="stylesheet" href="{url}"{rendered}>')
        else:
            chunks.append(f'<script src="{url}"{rendered}></script>')
        chunks.append(draw(st.sampled_from(["\n", " text &amp; ", "<p>x</p>", ""])))
    head = draw(st.booleans())
    body = "".join(chunks)
    return f"<!DOCTYPE html><html><head>{body}</head></html>" if head else body


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(page=pages())
def test_idempotent_property(tmp_path: Path, page: str) -> None:
    for name, data in (("a.js", b"a\n"), ("b.js", b"b\n"), ("s.css", b"p{}\n")):
        (tmp_path / name).write_bytes(data)
    once = rewrite_html(page, root=tmp_path)
    twice = rewrite_html(once.html, root=tmp_path)
    assert twice.html == once.html
    # every local script/link now carries a standard token browsers enforce
    for c in once.changes:
        if c.action in ("computed", "converted"):
            assert c.integrity.startswith("sha512-") and c.auraseal.startswith("auraseal-")


def test_cli_exit_codes_and_json(site: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "auraseal", "html", *args],
                              capture_output=True, text=True, timeout=60)

    ok = run(str(site / "index.html"), "-o", str(site / "o.html"), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["loader_added"] is True
    stdout = run(str(site / "index.html"))
    assert stdout.returncode == 0 and stdout.stdout == (site / "o.html").read_text()
    (site / "js" / "core.js").write_text("changed\n")
    assert run(str(site / "index.html")).returncode == 1  # integrity mismatch
    (site / "js" / "core.js").unlink()
    bad = run(str(site / "index.html"), "-o", str(site / "o2.html"))
    assert bad.returncode == 5 and "refusing" in bad.stderr and "Traceback" not in bad.stderr
    assert not (site / "o2.html").exists()
