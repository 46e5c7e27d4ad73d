"""The dashboard at ``/`` of ``auraseal serve``: server-rendered, no JavaScript.

It shows every package with its version and per-component health (intact,
recoverable with its coherence ``good/total`` and the ``k`` parts needed, or
lost), the ledger's head, the latest signed checkpoint and recent events,
and offers a *verify* button per package: a plain form POST, so it works
without JavaScript. When the server has publish tokens, the button needs an
operator session: ``POST /login`` with a publish token sets an
``HttpOnly; SameSite=Strict`` cookie holding a random session id
(``auraseal.server.sessions``); every dashboard POST must also carry a
same-origin ``Origin`` (or ``Referer``) header. Each package shows its
manifest's expiry (amber within 7 days, red once expired), the versions kept
and the signer key ids; events are read back from the ledger, each linked to
its entry (with its inclusion proof once committed). Responses carry a
strict Content-Security-Policy (``default-src 'none'``; the stylesheet is a
same-origin file pinned by SRI; no script at all).

:func:`routes` returns the Starlette routes; the server includes them. They
only need an object with the methods of :class:`DashboardState` (the server's
``ServerState`` has them). The loader module is served at
``/auraseal-loader.js`` by the same routes.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from importlib import resources
from string import Template
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from auraseal._time import format_time, utcnow
from auraseal.errors import AuraSealError, NotFoundError
from auraseal.integrity import hash_bytes, sri_token
from auraseal.server.sessions import COOKIE_NAME, SESSION_SECONDS, OperatorAuth, same_origin
from auraseal.web import LOADER_NAME, loader_bytes

__all__ = [
    "CSP",
    "DashboardState",
    "render_api_docs",
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


def _ledger_words(head: Mapping[str, Any]) -> str:
    entries, blocks, pending = head.get("entries", 0), head.get("blocks", 0), head.get("pending")
    if not entries and not pending:
        return "No event recorded yet."
    text = (f"{entries} event(s) committed in {blocks} signed block(s)"
            if entries else "Nothing committed yet")
    if isinstance(pending, int) and pending:
        text += (f"; {pending} event(s) pending: recorded, but not in a block yet "
                 "(they are committed with the next block)")
    elif isinstance(pending, int):
        text += "; nothing pending: every recorded event is in a block"
    return text + "."


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
    out = [f'<p id="ledger-words">{_e(_ledger_words(head))}</p>',
           f'<h3>Head</h3><dl id="ledger-head">{"".join(rows)}</dl>']
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


def _duration(seconds: int) -> str:
    s = abs(seconds)
    if s >= 86400:
        return f"{s / 86400:.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} hours"
    return f"{s // 60} minutes"


def _expiry_html(p: Mapping[str, Any]) -> str:
    expires, left = p.get("expires"), p.get("seconds_left")
    state = str(p.get("expiry_state") or "ok")
    if state not in ("ok", "expiring", "expired"):
        state = "ok"
    if not expires or not isinstance(left, int):
        return '<p class="expiry ok" data-expiry="ok">Manifest never expires.</p>'
    if state == "expired":
        text = (f"Manifest EXPIRED {_duration(left)} ago ({expires}): clients refuse it. "
                "Re-sign it (auraseal resign) and publish the manifest.")
    elif state == "expiring":
        text = (f"Manifest expires in {_duration(left)} ({expires}): re-sign it "
                "(auraseal resign) and publish the manifest before then.")
    else:
        text = f"Manifest expires in {_duration(left)} ({expires})."
    return f'<p class="expiry {state}" data-expiry="{state}">{_e(text)}</p>'


def _versions_html(p: Mapping[str, Any]) -> str:
    kept = p.get("versions")
    signers = p.get("signers")
    parts = []
    if isinstance(kept, list) and kept:
        parts.append("versions kept: " + ", ".join(_e(v) for v in kept))
    if isinstance(signers, list):
        ids = ", ".join(f'<span class="mono" title="{_e(k)}">{_e(str(k)[:16])}</span>'
                        for k in signers) or "none"
        parts.append(f"signed by key id(s): {ids}")
    if not parts:
        return ""
    return f'<p class="versions">{" &middot; ".join(parts)}</p>'


def _package_html(p: Mapping[str, Any], can_verify: bool = True) -> str:
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
    if can_verify:
        form = (
            f'<form method="post" action="/verify/{quote(name, safe="")}">'
            f'<button type="submit">Verify {_e(name)}</button></form>'
        )
    else:
        form = '<span class="note">log in to verify</span>'
    extra = _expiry_html(p) + _versions_html(p)
    if comps:
        rows = "".join(_component_row(c) for c in comps if isinstance(c, Mapping))
        table = (
            "<table><thead><tr><th>Component</th><th>Health</th><th>Coherence</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>"
        )
    else:
        table = '<p class="empty">No per-component health yet: press verify to scrub.</p>'
    expiry = str(p.get("expiry_state") or "ok")
    return (
        f'<div class="pkg" id="pkg-{_e(name)}" data-state="{_e(state)}" '
        f'data-expiry="{_e(expiry)}">'
        f'<div class="pkghead"><h3>{_e(name)}</h3>{_badge(state)}{form}</div>'
        f'<p class="meta">{meta}</p>{extra}{table}</div>'
    )


def _event_details(ev: Mapping[str, Any]) -> str:
    skip = ("type", "time", "entry_id", "committed")
    if ev.get("type") == "repair":
        what = []
        if ev.get("original_rebuilt"):
            what.append("rebuilt the original")
        n = ev.get("parts_rebuilt")
        if isinstance(n, int) and n:
            what.append(f"rebuilt {n} part(s)")
        changed = " and ".join(what) or "repaired"
        before = f" (before: {ev['before']})" if ev.get("before") else ""
        return (f"{ev.get('package')} v{ev.get('version')}: {ev.get('component')}: "
                f"{changed}{before}")
    text = ", ".join(f"{k}={str(v)[:200]}" for k, v in ev.items() if k not in skip)
    return text if len(text) <= 1000 else text[:1000] + "..."


def _events_html(events: Sequence[Mapping[str, Any]]) -> str:
    if not events:
        return '<p class="empty">No events yet.</p>'
    rows = []
    for ev in events:
        entry = str(ev.get("entry_id") or "")
        if entry:
            status = ev.get("committed")
            word = "" if status is None else (" committed" if status else " pending")
            link = (f'<a class="mono" href="/ledger/entries/{quote(entry, safe="")}">'
                    f"{_e(entry[:16])}</a>{_e(word)}")
        else:
            link = ""
        rows.append(
            f'<tr data-type="{_e(ev.get("type"))}"><td class="mono">{_e(ev.get("time"))}</td>'
            f'<td>{_e(ev.get("type"))}</td><td>{_e(_event_details(ev))}</td><td>{link}</td></tr>'
        )
    return (
        "<table><thead><tr><th>Time</th><th>Event</th><th>Details</th>"
        "<th>Ledger entry (inclusion proof)</th>"
        f'</tr></thead><tbody id="event-rows">{"".join(rows)}</tbody></table>'
    )


def _warnings_html(packages: Sequence[Mapping[str, Any]]) -> str:
    out = []
    for p in packages:
        state = p.get("expiry_state")
        if state in ("expiring", "expired"):
            verb = "has expired" if state == "expired" else "expires soon"
            out.append(f'<p class="warn {state}" role="alert">Package {_e(p.get("name"))} '
                       f"{verb} ({_e(p.get('expires'))}).</p>")
    return "".join(out)


def _login_html(login_state: str) -> str:
    if login_state == "in":
        return ('<form method="post" action="/logout" class="login">'
                '<span>operator logged in</span><button type="submit">Log out</button></form>')
    if login_state == "out":
        return ('<form method="post" action="/login" class="login">'
                '<label>Publish token <input type="password" name="token" '
                'autocomplete="current-password" required></label>'
                '<button type="submit">Log in</button></form>')
    return ""


def render_dashboard(
    state: DashboardState, *, flash: str = "", error: bool = False, now: datetime | None = None,
    login: str = "",
) -> str:
    """The dashboard page as HTML text.

    ``login``: "" (no operator login: anyone may verify), "out" (a login form,
    no verify buttons) or "in" (verify buttons and a log-out button)."""
    packages = state.packages()
    css_sri = sri_token("sha384", hash_bytes(_static(CSS_NAME), "sha384"))
    flash_html = (
        f'<p class="flash{" error" if error else ""}" role="status">{_e(flash)}</p>'
        if flash
        else ""
    )
    body = (
        "".join(_package_html(p, login != "out") for p in packages)
        if packages
        else '<p class="empty">No packages are served yet.</p>'
    )
    return _template("dashboard.html").substitute(
        css_sri=css_sri,
        package_count=len(packages),
        now=_e(format_time(now or utcnow())),
        flash=_warnings_html(packages) + flash_html,
        login=_login_html(login),
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
    """CSRF check of a dashboard POST: the browser's Fetch Metadata (when sent) says
    same-origin, and ``Origin`` (or ``Referer``) names this host; neither: refused."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    return same_origin(request.headers, request.headers.get("host", ""))


def _refuse(status: int, text: str, **headers: str) -> Response:
    return PlainTextResponse(text, status_code=status, headers={**security_headers(), **headers})


async def _form_field(request: Request, name: str, limit: int = 4096) -> str | None:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    try:
        values = parse_qs(body.decode("utf-8"), max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return None
    got = values.get(name)
    return got[0] if got else None


def _json_text(value: Any) -> str:
    import json  # noqa: PLC0415

    return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False)


def render_api_docs(doc: Mapping[str, Any]) -> str:
    """The OpenAPI document as one plain HTML page (no script, no external asset)."""
    info = doc.get("info") or {}
    css_sri = sri_token("sha384", hash_bytes(_static(CSS_NAME), "sha384"))
    out = [f"<h2>{_e(info.get('title', 'API'))} {_e(info.get('version', ''))}</h2>"]
    if info.get("description"):
        out.append(f"<p>{_e(info['description'])}</p>")
    out.append('<p>Machine-readable: <a href="/openapi.json">/openapi.json</a>.</p>')
    paths = doc.get("paths") or {}
    out.append('<ul class="toc">')
    for path in paths:
        out.append(f'<li><a href="#{_e(quote(path, safe=""))}" class="mono">{_e(path)}</a></li>')
    out.append("</ul>")
    for path, ops in paths.items():
        out.append(f'<section class="op" id="{_e(quote(path, safe=""))}">'
                   f'<h3 class="mono">{_e(path)}</h3>')
        for method, op in (ops or {}).items():
            if not isinstance(op, Mapping):
                continue
            out.append(f'<h4><span class="method">{_e(method.upper())}</span> '
                       f"{_e(op.get('summary', ''))}</h4>")
            if op.get("description"):
                out.append(f"<p>{_e(op['description'])}</p>")
            params = op.get("parameters") or []
            if params:
                rows = "".join(
                    f'<tr><td class="mono">{_e(pr.get("name"))}</td><td>{_e(pr.get("in"))}</td>'
                    f'<td>{"yes" if pr.get("required") else "no"}</td>'
                    f'<td class="mono">{_e(_json_text(pr.get("schema", {})))}</td></tr>'
                    for pr in params if isinstance(pr, Mapping)
                )
                out.append("<table><thead><tr><th>Parameter</th><th>In</th><th>Required</th>"
                           f"<th>Schema</th></tr></thead><tbody>{rows}</tbody></table>")
            responses = op.get("responses") or {}
            rows = "".join(
                f'<tr><td class="mono">{_e(code)}</td>'
                f'<td>{_e(r.get("description", "") if isinstance(r, Mapping) else "")}</td></tr>'
                for code, r in responses.items()
            )
            out.append("<table><thead><tr><th>Status</th><th>Meaning</th></tr></thead>"
                       f"<tbody>{rows}</tbody></table>")
        out.append("</section>")
    schemas = (doc.get("components") or {}).get("schemas") or {}
    if schemas:
        out.append("<h2>Schemas</h2>")
        for sname, schema in schemas.items():
            out.append(f'<h3 class="mono" id="schema-{_e(sname)}">{_e(sname)}</h3>'
                       f"<pre>{_e(_json_text(schema))}</pre>")
    return _template("docs.html").substitute(css_sri=css_sri, body="".join(out))


def routes(
    state: DashboardState,
    auth: OperatorAuth | None = None,
    api_doc: Callable[[], Mapping[str, Any]] | None = None,
) -> list[BaseRoute]:
    """Starlette routes: ``GET /``, ``POST /verify/{name}``, ``/login``, ``/logout``,
    ``/docs`` (given ``api_doc``), the loader and the CSS.

    With ``auth`` holding publish tokens, ``POST /verify`` needs a bearer token
    or an operator session (``POST /login``); otherwise it runs one at a time,
    rate-limited (429 with ``Retry-After``)."""
    loader = loader_bytes()
    css = _static(CSS_NAME)

    def login_state(request: Request) -> str:
        if auth is None or not auth.enabled:
            return ""
        return "in" if auth.session_ok(request.cookies.get(COOKIE_NAME)) else "out"

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
        page = render_dashboard(state, flash=flash, error=error, login=login_state(request))
        return HTMLResponse(page, headers=security_headers())

    async def verify(request: Request) -> Response:
        bearer = auth is not None and auth.bearer_ok(request.headers.get("authorization"))
        if not bearer and not _same_origin(request):
            return _refuse(403, "cross-site request refused")
        limited = False
        if auth is not None and auth.enabled and not bearer:
            if not auth.session_ok(request.cookies.get(COOKIE_NAME)):
                return _refuse(401, "log in first (POST /login with a publish token)")
        elif auth is not None and not bearer:
            limited = True
        name = str(request.path_params["name"])
        if name not in {str(p.get("name")) for p in state.packages()}:
            return _refuse(404, "no such package")
        if limited and auth is not None:
            wait = auth.limiter.try_start()
            if wait is not None:
                return _refuse(429, "a verify ran just now or is running; try again later",
                               **{"Retry-After": str(max(1, int(wait + 0.999)))})
        try:
            health = await state.verify_package(name)
        except NotFoundError:
            return _refuse(404, "no such package")
        except AuraSealError:
            query = urlencode({"failed": name})
        else:
            query = urlencode({"verified": name, "state": str(getattr(health, "state", ""))})
            # ("state" is for scripts reading the redirect; the page shows live state)
        finally:
            if limited and auth is not None:
                auth.limiter.done()
        target = f"/?{query}#pkg-{quote(name, safe='')}"
        return RedirectResponse(target, status_code=303, headers=security_headers())

    async def login(request: Request) -> Response:
        if auth is None or not auth.enabled:
            return _refuse(404, "no operator login: the server has no publish token")
        if not _same_origin(request):
            return _refuse(403, "cross-site request refused")
        token = await _form_field(request, "token")
        sid = auth.login(token or "")
        if sid is None:
            return HTMLResponse(
                render_dashboard(state, flash="Login refused: that is not a publish token.",
                                 error=True, login="out"),
                status_code=401, headers=security_headers(),
            )
        resp: Response = RedirectResponse("/", status_code=303, headers=security_headers())
        resp.set_cookie(
            COOKIE_NAME, sid, max_age=SESSION_SECONDS, path="/", httponly=True,
            samesite="strict", secure=request.url.scheme == "https",
        )
        return resp

    async def logout(request: Request) -> Response:
        if not _same_origin(request):
            return _refuse(403, "cross-site request refused")
        if auth is not None:
            auth.logout(request.cookies.get(COOKIE_NAME))
        resp = RedirectResponse("/", status_code=303, headers=security_headers())
        resp.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
        return resp

    async def docs(request: Request) -> Response:
        assert api_doc is not None
        return HTMLResponse(render_api_docs(api_doc()), headers=security_headers())

    async def loader_js(request: Request) -> Response:
        return _asset(loader, "text/javascript; charset=utf-8", request)

    async def dashboard_css(request: Request) -> Response:
        return _asset(css, "text/css; charset=utf-8", request)

    out: list[BaseRoute] = [
        Route("/", index, methods=["GET", "HEAD"], name="dashboard"),
        Route("/verify/{name}", verify, methods=["POST"], name="dashboard_verify"),
        Route("/login", login, methods=["POST"], name="dashboard_login"),
        Route("/logout", logout, methods=["POST"], name="dashboard_logout"),
        Route("/" + LOADER_NAME, loader_js, methods=["GET", "HEAD"], name="loader_js"),
        Route("/" + CSS_NAME, dashboard_css, methods=["GET", "HEAD"], name="dashboard_css"),
    ]
    if api_doc is not None:
        out.append(Route("/docs", docs, methods=["GET", "HEAD"], name="api_docs"))
    return out
