"""The dashboard at ``/`` of ``auraseal serve``: server-rendered, no JavaScript.

It shows every package with its version and per-component health (intact,
recoverable with its coherence ``good/total`` and the ``k`` parts needed, or
lost), the ledger's head, the latest signed checkpoint and recent events,
and offers a *verify* button per package: a plain form POST, so it works
without JavaScript. Responses carry a strict Content-Security-Policy
(``default-src 'none'``; the stylesheet is a same-origin file pinned by SRI;
no script at all).

:func:`routes` returns the Starlette routes; the server includes them. They
only need an object with the methods of :class:`DashboardState` (the server's
``ServerState`` has them). The loader module is served at
``/auraseal-loader.js`` by the same routes.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime
from importlib import resources
from string import Template
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from auraseal._time import format_time, utcnow
from auraseal.errors import AuraSealError, NotFoundError
from auraseal.integrity import hash_bytes, sri_token
from auraseal.web import LOADER_NAME, loader_bytes

__all__ = [
    "CSP",
    "DashboardState",
    "render_dashboard",
    "routes",
    "security_headers",
]

#: The dashboard's Content-Security-Policy: nothing but a same-origin stylesheet.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
CSS_NAME = "dashboard.css"


class DashboardState(Protocol):
    """What the dashboard reads and triggers (the server's ``ServerState``)."""

    def packages(self) -> list[dict[str, Any]]: ...

    def ledger_head(self) -> dict[str, Any] | None: ...

    def checkpoint_text(self) -> str | None: ...

    def recent_events(self, limit: int = 50) -> list[dict[str, Any]]: ...

    def verify_package(self, name: str, repair: bool = True) -> Awaitable[Any]: ...


def _static(name: str) -> bytes:
    return resources.files("auraseal.web").joinpath("static", name).read_bytes()


def _template(name: str) -> Template:
    text = resources.files("auraseal.web").joinpath("templates", name).read_text("utf-8")
    return Template(text)


def security_headers() -> dict[str, str]:
    """Headers every dashboard page carries."""
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _size(n: object) -> str:
    if not isinstance(n, int):
        return _e(n)
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)  # pragma: no cover


def _badge(state: object) -> str:
    s = str(state or "unchecked")
    cls = s if s in ("intact", "recoverable", "degraded", "lost") else "unchecked"
    return f'<span class="badge {cls}">{_e(s)}</span>'


def _scalars(d: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in d.items() if not isinstance(v, Mapping | list | tuple)]


def _ledger_html(head: Mapping[str, Any] | None, checkpoint: str | None) -> str:
    if head is None:
        return '<p class="empty" id="ledger-head">No ledger is configured.</p>'
    rows = [
        f'<dt>{_e(k)}</dt><dd class="mono">{"none yet" if v is None else _e(v)}</dd>'
        for k, v in _scalars(head)
    ]
    for k, v in head.items():
        if isinstance(v, Mapping):
            for k2, v2 in _scalars(v):
                rows.append(f'<dt>{_e(k)}.{_e(k2)}</dt><dd class="mono">{_e(v2)}</dd>')
    out = [f'<h3>Head</h3><dl id="ledger-head">{"".join(rows)}</dl>']
    out.append("<h3>Latest signed checkpoint</h3>")
    if checkpoint:
        out.append(f'<pre id="checkpoint">{_e(checkpoint)}</pre>')
    else:
        out.append('<p class="empty" id="checkpoint">No checkpoint signed yet.</p>')
    return "".join(out)


def _component_row(c: Mapping[str, Any]) -> str:
    state = str(c.get("state", "unchecked"))
    good, total, k = c.get("good"), c.get("total"), c.get("k")
    coherence = c.get("coherence")
    if isinstance(coherence, int | float) and total:
        detail = f"{good}/{total} parts intact (coherence {coherence:.3f}); {k} needed to rebuild"
    else:
        detail = ""
    original = "" if c.get("original_ok", True) else " &middot; original damaged"
    return (
        f'<tr data-state="{_e(state)}"><td class="mono">{_e(c.get("path"))}</td>'
        f"<td>{_badge(state)}</td><td>{_e(detail)}{original}</td></tr>"
    )


def _package_html(p: Mapping[str, Any]) -> str:
    name = str(p.get("name", ""))
    raw_health = p.get("health")
    health: Mapping[str, Any] = raw_health if isinstance(raw_health, Mapping) else {}
    state = health.get("state", "unchecked")
    comps = health.get("components") or []
    checked = health.get("checked_at")
    raw_counts = health.get("counts")
    counts: Mapping[str, Any] = raw_counts if isinstance(raw_counts, Mapping) else {}
    count_text = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    meta = (
        f"version <b>{_e(p.get('version'))}</b> &middot; {_size(p.get('size'))} &middot; "
        f"{_e(p.get('files'))} file(s) &middot; "
        + (f"checked {_e(checked)}" if checked else "not scrubbed yet")
        + (f" &middot; {_e(count_text)}" if count_text else "")
    )
    form = (
        f'<form method="post" action="/verify/{quote(name, safe="")}">'
        f'<button type="submit">Verify {_e(name)}</button></form>'
    )
    if comps:
        rows = "".join(_component_row(c) for c in comps if isinstance(c, Mapping))
        table = (
            "<table><thead><tr><th>Component</th><th>Health</th><th>Coherence</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>"
        )
    else:
        table = '<p class="empty">No per-component health yet: press verify to scrub.</p>'
    return (
        f'<div class="pkg" id="pkg-{_e(name)}" data-state="{_e(state)}">'
        f'<div class="pkghead"><h3>{_e(name)}</h3>{_badge(state)}{form}</div>'
        f'<p class="meta">{meta}</p>{table}</div>'
    )


def _events_html(events: Sequence[Mapping[str, Any]]) -> str:
    if not events:
        return '<p class="empty">No events yet.</p>'
    rows = []
    for ev in events:
        details = ", ".join(
            f"{k}={v}" for k, v in ev.items() if k not in ("type", "time", "entry_id")
        )
        rows.append(
            f'<tr><td class="mono">{_e(ev.get("time"))}</td><td>{_e(ev.get("type"))}</td>'
            f'<td>{_e(details)}</td><td class="mono">{_e(str(ev.get("entry_id") or "")[:16])}'
            "</td></tr>"
        )
    return (
        "<table><thead><tr><th>Time</th><th>Event</th><th>Details</th><th>Ledger entry</th>"
        f'</tr></thead><tbody id="event-rows">{"".join(rows)}</tbody></table>'
    )


def render_dashboard(
    state: DashboardState, *, flash: str = "", error: bool = False, now: datetime | None = None
) -> str:
    """The dashboard page as HTML text."""
    packages = state.packages()
    css_sri = sri_token("sha384", hash_bytes(_static(CSS_NAME), "sha384"))
    flash_html = (
        f'<p class="flash{" error" if error else ""}" role="status">{_e(flash)}</p>'
        if flash
        else ""
    )
    body = (
        "".join(_package_html(p) for p in packages)
        if packages
        else '<p class="empty">No packages are served yet.</p>'
    )
    return _template("dashboard.html").substitute(
        css_sri=css_sri,
        package_count=len(packages),
        now=_e(format_time(now or utcnow())),
        flash=flash_html,
        ledger=_ledger_html(state.ledger_head(), state.checkpoint_text()),
        packages=body,
        events=_events_html(state.recent_events(30)),
    )


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _asset(data: bytes, media_type: str, request: Request) -> Response:
    tag = _etag(data)
    headers = {
        "ETag": tag,
        "Cache-Control": "public, max-age=300",
        "X-Content-Type-Options": "nosniff",
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if request.headers.get("if-none-match") == tag:
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else data
    resp = Response(body, media_type=media_type, headers=headers)
    resp.headers["Content-Length"] = str(len(data))
    return resp


def _same_origin(request: Request) -> bool:
    """Refuse cross-site form posts (the verify button is not a public API)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:  # a browser tells us directly (Fetch Metadata)
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def routes(state: DashboardState) -> list[BaseRoute]:
    """Starlette routes: ``GET /``, ``POST /verify/{name}``, the loader and the CSS."""
    loader = loader_bytes()
    css = _static(CSS_NAME)

    async def index(request: Request) -> Response:
        flash, error = "", False
        # Only names of served packages and their current state are shown: no
        # text from the query string reaches the page.
        current = {str(p.get("name")): p for p in state.packages()}
        verified = request.query_params.get("verified")
        failed = request.query_params.get("failed")
        if verified in current:
            health = current[verified].get("health")
            now_state = health.get("state", "") if isinstance(health, Mapping) else ""
            flash = f"Verified {verified}: {now_state}".rstrip(": ")
        elif failed in current:
            flash, error = f"Verification of {failed} failed; see recent events.", True
        page = render_dashboard(state, flash=flash, error=error)
        return HTMLResponse(page, headers=security_headers())

    async def verify(request: Request) -> Response:
        if not _same_origin(request):
            return PlainTextResponse(
                "cross-site request refused", status_code=403, headers=security_headers()
            )
        name = str(request.path_params["name"])
        if name not in {str(p.get("name")) for p in state.packages()}:
            return PlainTextResponse("no such package", status_code=404, headers=security_headers())
        try:
            health = await state.verify_package(name)
        except NotFoundError:
            return PlainTextResponse("no such package", status_code=404, headers=security_headers())
        except AuraSealError:
            query = urlencode({"failed": name})
        else:
            query = urlencode({"verified": name, "state": str(getattr(health, "state", ""))})
            # ("state" is for scripts reading the redirect; the page shows live state)
        target = f"/?{query}#pkg-{quote(name, safe='')}"
        return RedirectResponse(target, status_code=303, headers=security_headers())

    async def loader_js(request: Request) -> Response:
        return _asset(loader, "text/javascript; charset=utf-8", request)

    async def dashboard_css(request: Request) -> Response:
        return _asset(css, "text/css; charset=utf-8", request)

    return [
        Route("/", index, methods=["GET", "HEAD"], name="dashboard"),
        Route("/verify/{name}", verify, methods=["POST"], name="dashboard_verify"),
        Route("/" + LOADER_NAME, loader_js, methods=["GET", "HEAD"], name="loader_js"),
        Route("/" + CSS_NAME, dashboard_css, methods=["GET", "HEAD"], name="dashboard_css"),
    ]
