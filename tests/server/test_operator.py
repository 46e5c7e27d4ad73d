"""Issue 11: expiry in /packages and /healthz, operator login for /verify, ledger-backed
events, and the /docs page."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx

from auraseal.sealing import seal_tree
from auraseal.server.sessions import COOKIE_NAME
from auraseal.server.state import expiry_of
from auraseal.signing import SigningKey

from .conftest import EXAMPLE


def test_packages_and_healthz_warn_before_and_after_expiry(
    tmp_path: Path, serve: Callable[..., str], publisher_key: SigningKey,
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for name, life in (("fresh", timedelta(days=30)), ("soon", timedelta(days=2)),
                       ("gone", timedelta(seconds=-60))):
        seal_tree(EXAMPLE, root / name, keys=[publisher_key], name=name, expires=life)
    base = serve(root, healing=False)
    pkgs = {p["name"]: p for p in httpx.get(f"{base}/packages").json()["packages"]}
    assert pkgs["fresh"]["expiry_state"] == "ok"
    assert 29 * 86400 < pkgs["fresh"]["seconds_left"] <= 30 * 86400
    assert pkgs["soon"]["expiry_state"] == "expiring"
    assert 86400 < pkgs["soon"]["seconds_left"] <= 2 * 86400
    assert pkgs["gone"]["expiry_state"] == "expired" and pkgs["gone"]["seconds_left"] < 0
    assert pkgs["gone"]["expires"].endswith("Z")
    assert pkgs["fresh"]["signers"] == [publisher_key.key_id]
    assert pkgs["fresh"]["versions"] == [1]
    r = httpx.get(f"{base}/healthz")
    assert r.status_code == 200  # degraded is a warning, the server still serves
    body = r.json()
    assert body["status"] == "degraded"
    assert any(x.startswith("soon: manifest expires at") for x in body["reasons"])
    assert any(x.startswith("gone: manifest expired at") for x in body["reasons"])
    assert not any(x.startswith("fresh") for x in body["reasons"])
    page = httpx.get(f"{base}/").text
    assert 'id="pkg-soon" data-state="unchecked" data-expiry="expiring"' in page
    assert 'class="expiry expired"' in page and "Manifest EXPIRED" in page


def test_healthz_ok_without_expiry_problems(base_url: str) -> None:
    r = httpx.get(f"{base_url}/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["reasons"] == []


def test_expiry_of_boundaries() -> None:
    from datetime import UTC, datetime  # noqa: PLC0415

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert expiry_of(None, now)["expiry_state"] == "ok"
    assert expiry_of(now + timedelta(days=7, seconds=1), now)["expiry_state"] == "ok"
    assert expiry_of(now + timedelta(days=7), now)["expiry_state"] == "expiring"
    assert expiry_of(now, now)["expiry_state"] == "expired"


def test_verify_needs_a_logged_in_operator_and_a_same_origin_post(
    root: Path, serve: Callable[..., str], token: tuple[str, Path],
) -> None:
    base = serve(root, healing=False)
    origin = {"Origin": base}
    with httpx.Client(base_url=base) as c:
        r = c.post("/verify/site", headers=origin)
        assert r.status_code == 401
        assert "Verify site" not in c.get("/").text  # no button before login
        assert 'action="/login"' in c.get("/").text
        r = c.post("/login", data={"token": "aspub_wrong"}, headers=origin)
        assert r.status_code == 401 and COOKIE_NAME not in c.cookies
        assert "set-cookie" not in r.headers
        r = c.post("/login", data={"token": token[0]})  # no Origin: CSRF refused
        assert r.status_code == 403 and COOKIE_NAME not in c.cookies
        r = c.post("/login", data={"token": token[0]},
                   headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        r = c.post("/login", data={"token": token[0]}, headers=origin)
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
        assert {"httponly", "samesite", "path", "max-age"} <= attrs
        assert "samesite=strict" in cookie.lower()
        assert "secure" not in attrs  # plain http on loopback
        sid = c.cookies[COOKIE_NAME]
        assert token[0] not in cookie and sid != token[0] and len(sid) >= 40
        stored = list((root / ".auraseal/sessions").iterdir())
        assert len(stored) == 1 and sid not in stored[0].name
        assert token[0] not in stored[0].read_text()
        assert "Verify site" in c.get("/").text
        r = c.post("/verify/site")  # the session cookie alone is not enough
        assert r.status_code == 403
        r = c.post("/verify/site", headers={"Referer": base + "/"})
        assert r.status_code == 303 and r.headers["location"].startswith("/?verified=site")
        r = c.post("/verify/site", headers=origin)
        assert r.status_code == 303
        r = c.post("/logout", headers=origin)
        assert r.status_code == 303
        c.cookies.set(COOKIE_NAME, sid)  # a replayed id after logout is dead
        assert c.post("/verify/site", headers=origin).status_code == 401
    # a script with the bearer token needs no cookie and no Origin
    r = httpx.post(f"{base}/verify/site", headers={"Authorization": f"Bearer {token[0]}"})
    assert r.status_code == 303


def test_login_cookie_is_secure_over_https(
    root: Path, serve: Callable[..., str], token: tuple[str, Path],
) -> None:
    base = serve(root, healing=False)
    # behind a TLS proxy on loopback (uvicorn trusts X-Forwarded-Proto from 127.0.0.1)
    https_origin = base.replace("http://", "https://")
    r = httpx.post(f"{base}/login", data={"token": token[0]},
                   headers={"X-Forwarded-Proto": "https", "Origin": https_origin})
    assert r.status_code == 303
    assert "secure" in {a.strip().lower() for a in r.headers["set-cookie"].split(";")}


def test_verify_without_tokens_runs_one_at_a_time_and_rate_limited(
    root: Path, serve: Callable[..., str],
) -> None:
    base = serve(root, healing=False, publish_token_file=None)
    with httpx.Client(base_url=base, headers={"Origin": base}) as c:
        assert c.post("/verify/site").status_code == 303
        r = c.post("/verify/site")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert c.post("/login", data={"token": "x"}).status_code == 404


def test_events_come_from_the_ledger_and_survive_a_restart(
    root: Path, serve: Callable[..., str], token: tuple[str, Path],
) -> None:
    base = serve(root, healing=False)
    part = sorted((root / "site").rglob("*.part.*"))[1]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    auth = {"Authorization": f"Bearer {token[0]}"}
    r = httpx.post(f"{base}/packages/site/scrub", headers=auth, timeout=60)
    assert r.status_code == 200 and r.json()["health"]["state"] == "intact"
    # a second server process on the same ROOT (as after a restart) shows the events
    other = serve(root, healing=False)
    page = httpx.get(f"{other}/").text
    assert 'data-type="repair"' in page
    assert "rebuilt 1 part(s) (before: " in page
    ids = re.findall(r'href="/ledger/entries/([0-9a-f-]+)"', page)
    assert ids
    assert 'id="ledger-words"' in page and "pending" in page
    entry = httpx.get(f"{other}/ledger/entries/{ids[0]}").json()
    assert "inclusion" in entry and entry["entry_id"] == ids[0]
    # an API-recorded entry with huge details: hashed in full, not copied into the page
    r = httpx.post(f"{other}/ledger/entries", headers=auth,
                   json={"type": "note", "data": {"blob": "x" * 50_000}})
    assert r.status_code == 201
    page = httpx.get(f"{other}/").text
    assert "metadata_omitted" in page and "x" * 1000 not in page


def test_docs_page_renders_the_api_without_external_assets(base_url: str) -> None:
    r = httpx.get(f"{base_url}/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    page = r.text
    assert "<script" not in page.lower()
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "https://" not in page and "http://" not in page
    assert "/packages/{name}/integrity-manifest.json" in page
    assert "expiry_state" in page and "Package" in page  # the schemas are shown too
    spec = httpx.get(f"{base_url}/openapi.json").text
    assert "seed" not in spec.lower()
    for path in httpx.get(f"{base_url}/openapi.json").json()["paths"]:
        assert path.replace("{", "").replace("}", "") in page.replace("{", "").replace("}", "")
