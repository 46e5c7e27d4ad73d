"""Script-loading vectors the HTML rewriter must not miss (issue 10, item 6).

Each test replays markup where a browser loads code but a naive scan sees no
tag (or sees a tag where a browser sees text).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from auraseal.errors import InputError, UnverifiableScriptError
from auraseal.web.html import rewrite_html


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "a.js").write_bytes(b"a()\n")
    (tmp_path / "m.js").write_bytes(b"export const m = 1;\n")
    return tmp_path


def rewritten_urls(page: str, root: Path) -> list[str]:
    return [c.url for c in rewrite_html(page, root=root).changes if c.action != "loader"]


@pytest.mark.parametrize(
    ("page", "line"),
    [
        ('<svg><script href="evil.js"></script></svg>', 1),
        ('<p>x</p>\n<svg>\n<script xlink:href="evil.js"/>\n</svg>', 3),
        ('<SVG><g><SCRIPT XLINK:HREF="evil.js"></SCRIPT></g></SVG>', 1),
        ('<svg><script type="module" href="evil.js"></script></svg>', 1),
        # inside SVG, <style> and <textarea> hold markup, not text
        ('<svg><style><script href="evil.js"></script></style></svg>', 1),
        ('<svg><textarea><script href="evil.js"></script></textarea></svg>', 1),
        ('<math><script href="evil.js"></script></math>', 1),
        ('<svg xmlns:x="http://www.w3.org/1999/xlink"><script x:href="evil.js"/></svg>', 1),
    ],
)
def test_svg_script_href_loading_unverified_code_is_refused(
    root: Path, page: str, line: int
) -> None:
    with pytest.raises(UnverifiableScriptError) as exc:
        rewrite_html(page, root=root)
    assert isinstance(exc.value, InputError)  # exit 2
    assert f":{line}:" in str(exc.value) and "evil.js" in str(exc.value)
    assert "<script" in str(exc.value)


def test_cli_refuses_svg_script_href_with_exit_2_naming_tag_and_line(root: Path) -> None:
    page = root / "index.html"
    page.write_text('<!DOCTYPE html>\n<body>\n<svg><script href="a.js"></script></svg>\n')
    res = subprocess.run(
        [sys.executable, "-m", "auraseal", "html", str(page), "-o", str(root / "out.html")],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("auraseal: error: ") and "Traceback" not in res.stderr
    assert f"{page}:3:" in res.stderr and "<script href='a.js'>" in res.stderr
    assert not (root / "out.html").exists()


@pytest.mark.parametrize(
    "page",
    [
        # a comment ends at --!> and <!--> is a whole (empty) comment
        '<!-- x --!><script src="a.js"></script><!-- -->',
        '<!--><script src="a.js"></script><!-- -->',
        '<!---><script src="a.js"></script><!-- -->',
        # outside SVG, <![CDATA[ is a bogus comment that ends at the first >
        '<![CDATA[ x > <script src="a.js"></script> ]]>',
        # script text ends at </script followed by space or /, not only at </script>
        '<script>var x = 1;</script x><script src="a.js"></script><script></script>',
        '<script>var x = 1;</script/><script src="a.js"></script><script></script>',
        '<style>p{}</style foo><script src="a.js"></script><style></style>',
    ],
)
def test_script_hidden_from_the_parser_but_run_by_browsers_is_rewritten(
    root: Path, page: str
) -> None:
    assert rewritten_urls(page, root) == ["a.js"]


@pytest.mark.parametrize(
    "script",
    [
        '<script type="text/jscript" src="a.js"></script>',
        '<script type="application/x-javascript" src="a.js"></script>',
        '<script type=" TEXT/JavaScript1.5 " src="a.js"></script>',
        '<script language="JavaScript" src="a.js"></script>',
        '<SCRIPT SRC="a.js"></SCRIPT>',
    ],
)
def test_legacy_javascript_type_loading_unverified_code_is_rewritten(
    root: Path, script: str
) -> None:
    assert rewritten_urls(script, root) == ["a.js"]


def test_non_javascript_types_are_left_alone(root: Path) -> None:
    page = ('<script type="text/plain" src="missing.js"></script>'
            '<script language="vbscript" src="missing.js"></script>')
    assert rewrite_html(page, root=root).html == page


@pytest.mark.parametrize(
    "inert",
    [
        '<textarea><script src="missing.js"></script></textarea>',
        '<textarea><svg><script href="evil.js"></script></svg></textarea>',
        '<title><script src="missing.js"></script></title>',
        '<noscript><script src="missing.js"></script></noscript>',
        '<xmp><script src="missing.js"></script></xmp>',
        '<iframe><script src="missing.js"></script></iframe>',
        '<script>document.write(\'<script src="missing.js"><\\/script>\')</script>',
        '<svg><foreignObject><textarea><script href="evil.js"></script></textarea>'
        "</foreignObject></svg>",
        '<svg><script><![CDATA[ var s = "<script href=\'evil.js\'>"; ]]></script></svg>',
    ],
)
def test_script_markup_inside_text_elements_is_not_mangled(root: Path, inert: str) -> None:
    page = f"<!DOCTYPE html><body>{inert}<script src=\"a.js\"></script></body>"
    res = rewrite_html(page, root=root)
    assert [c.url for c in res.changes] == ["a.js"]
    assert res.html.startswith(f"<!DOCTYPE html><body>{inert}<script src=\"a.js\" integrity=")


def test_import_map_is_not_mangled(root: Path) -> None:
    imap = ('<script type="importmap">{"imports": {"m": "/m.js"},'
            ' "integrity": {"/m.js": "sha384-x"}}</script>')
    page = f'{imap}\n<script type="module" src="m.js"></script>'
    res = rewrite_html(page, root=root)
    assert res.html.startswith(imap + '\n<script type="module" src="m.js" integrity="sha512-')
    assert [c.url for c in res.changes] == ["m.js"]


def test_html_script_inside_svg_foreign_object_is_rewritten(root: Path) -> None:
    page = '<svg><foreignObject><script src="a.js"></script></foreignObject></svg>'
    assert rewritten_urls(page, root) == ["a.js"]
    # and after the breakout the page is HTML again: <textarea> holds text
    page = ('<svg><g></svg><textarea><script src="missing.js"></script></textarea>'
            '<svg><p><style><script href="x"></script></style>')
    assert rewrite_html(page, root=root).html == page
