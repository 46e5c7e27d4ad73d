"""AuraSeal's web parts: the browser loader, the HTML rewriter and the dashboard.

* ``static/auraseal-loader.js`` — a dependency-free ES module that verifies
  scripts, stylesheets and signed manifests with WebCrypto before anything
  runs (see ``docs/WEB.md``). :func:`loader_bytes` / :func:`loader_sri` give
  its bytes and its SRI string.
* :mod:`auraseal.web.html` — ``rewrite_html`` / ``rewrite_file``: make a page's
  ``integrity`` attributes ones browsers enforce natively.
* :mod:`auraseal.web.dashboard` — the server-rendered dashboard at ``/``.
"""

from __future__ import annotations

from importlib import resources

from auraseal.integrity import hash_bytes, sri_token

__all__ = ["LOADER_NAME", "loader_bytes", "loader_sri"]

#: The loader's file name (and the path ``auraseal serve`` serves it under).
LOADER_NAME = "auraseal-loader.js"


def loader_bytes() -> bytes:
    """The loader module exactly as shipped in the package."""
    return resources.files("auraseal.web").joinpath("static", LOADER_NAME).read_bytes()


def loader_sri(algorithm: str = "sha384") -> str:
    """SRI token of the shipped loader (for ``<script integrity>``)."""
    return sri_token(algorithm, hash_bytes(loader_bytes(), algorithm))
