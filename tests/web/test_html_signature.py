"""`auraseal html` and signature-based SRI (issue 12): ed25519- tokens a page
has are kept; --sign-key / --mode add them."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from auraseal.errors import UsageError
from auraseal.signing import SigningKey
from auraseal.web.html import rewrite_html

JS = b"window.x = 1;\n"
KEY = SigningKey.generate()
ED = "ed25519-" + base64.b64encode(KEY.public.raw).decode()
SHA = "sha512-" + base64.b64encode(hashlib.sha512(JS).digest()).decode()


@pytest.fixture
def www(tmp_path: Path) -> Path:
    (tmp_path / "a.js").write_bytes(JS)
    return tmp_path


def integrity_of(html: str) -> str:
    return html.split('integrity="', 1)[1].split('"', 1)[0]


def test_html_keeps_existing_ed25519_token_next_to_computed_hash(www: Path) -> None:
    # before issue 12 the ed25519 token was dropped as "unknown"
    out = rewrite_html(f'<script src="a.js" integrity="{SHA} {ED}"></script>', root=www)
    assert integrity_of(out.html) == f"{SHA} {ED}"


def test_html_accepts_signature_only_tag(www: Path) -> None:
    # before issue 12 this was an error ("no usable integrity token")
    out = rewrite_html(f'<script src="a.js" integrity="{ED}"></script>', root=www)
    assert integrity_of(out.html) == f"{SHA} {ED}"  # hash mode adds the content pin
    out = rewrite_html(f'<script src="a.js" integrity="{ED}"></script>', root=www,
                       mode="signature")
    assert integrity_of(out.html) == ED


def test_html_sign_key_modes(www: Path) -> None:
    page = '<script src="a.js"></script><script src="https://cdn.example/x.js"></script>'
    both = rewrite_html(page, root=www, mode="both", sign_keys=[KEY.public.raw])
    assert integrity_of(both.html) == f"{SHA} {ED}"
    sig = rewrite_html(page, root=www, mode="signature", sign_keys=[KEY.public.raw])
    assert sig.html.count(f'integrity="{ED}"') == 2  # a remote script can be signed too
    assert "data-auraseal-integrity" not in sig.html
    plain = rewrite_html(page, root=www)
    assert ED not in plain.html and integrity_of(plain.html) == SHA
    with pytest.raises(UsageError):
        rewrite_html(page, root=www, mode="both")


def test_html_cli_sign_key(www: Path, tmp_path: Path) -> None:
    (www / "index.html").write_text('<script src="a.js"></script>')
    pub = tmp_path / "pub.pem"
    pub.write_bytes(KEY.public.pem())
    r = subprocess.run([sys.executable, "-m", "auraseal", "html", str(www / "index.html"),
                        "--sign-key", str(pub), "--mode", "signature"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert integrity_of(r.stdout) == ED
