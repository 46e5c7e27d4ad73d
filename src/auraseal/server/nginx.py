"""Generate an nginx configuration that serves the package tree statically.

The generated ``server`` block answers the static routes of ``docs/SERVER.md``
from ROOT with the same headers as the Python server (CORS with preflight,
``X-Content-Type-Options``, ``Cache-Control`` per kind, ``Accept-Ranges``,
gzip for the same types, the same Content-Type table), so a publisher can put
the packages behind nginx or a CDN and keep only publishing, the package
archive and the ledger in Python (proxied to ``upstream`` when given).

Like the Python server, nginx serves only what a manifest lists and follows
no symlink inside a package (``disable_symlinks on``; only the ``ROOT/<name>``
link itself is trusted). nginx cannot read manifests, so the store keeps
every served version directory holding exactly the listed files: publishes
with unlisted files are refused, and adoption (``auraseal serve`` and
``auraseal nginx-conf`` on start) and every scrub move anything unlisted to
``.auraseal/unlisted/``. Temp files (``*.auraseal-tmp-*``) are never served.

Differences, on purpose: nginx's ETag is ``"<mtime>-<size>"`` (ours comes from
the content digest); a version that was never published through the server
(a plain directory in ROOT) has no ``/versions/<v>/`` URL under nginx.
"""

from __future__ import annotations

import re
from pathlib import Path

from auraseal.errors import AuraSealError, UsageError
from auraseal.httpsig import repr_digest_for
from auraseal.manifest import MANIFEST_NAME, Manifest, read_manifest_file
from auraseal.server.app import EXPOSE, IMMUTABLE
from auraseal.server.config import STATE_DIR, VERSIONS_DIR, check_package_name
from auraseal.server.freshness import FRESHNESS_DIR
from auraseal.server.reports import integrity_policy_headers
from auraseal.server.static import COMPRESSIBLE, MIME_TYPES, content_type_for

__all__ = ["render_nginx_conf"]

NAME = r"([A-Za-z0-9][A-Za-z0-9._-]*)"
_SAFE = re.compile(r"^[^\"'$;{}\s\\#]+$")


def _check(value: str, what: str) -> str:
    if not _SAFE.match(value):
        raise UsageError("contains characters nginx would misread (quotes, $, ;, braces)", what)
    return value


def _types() -> str:
    by_type: dict[str, list[str]] = {}
    for ext, ctype in MIME_TYPES.items():
        by_type.setdefault(ctype, []).append(ext)
    lines = [f"        {t} {' '.join(exts)};" for t, exts in sorted(by_type.items())]
    body = "\n".join(lines)
    return f"    types {{\n{body}\n    }}\n    default_type application/octet-stream;\n"


#: nginx variables set by the generated maps (empty: the header is not sent)
_SIG_HEADERS = (
    ("Unencoded-Digest", "auraseal_unencoded_digest"),
    ("Signature-Input", "auraseal_signature_input"),
    ("Signature", "auraseal_signature"),
    ("Repr-Digest", "auraseal_repr_digest"),
)


def _headers(cache_control: str) -> str:
    sig = "".join(f"        add_header {h} ${v} always;\n" for h, v in _SIG_HEADERS)
    return (
        sig
        + "        add_header Integrity-Policy $auraseal_integrity_policy always;\n"
        + "        add_header Integrity-Policy-Report-Only "
        "$auraseal_integrity_policy_report_only always;\n"
        + "        add_header Reporting-Endpoints $auraseal_reporting_endpoints always;\n"
        f'        add_header Cache-Control "{cache_control}" always;\n'
        '        add_header X-Content-Type-Options nosniff always;\n'
        '        add_header Access-Control-Allow-Origin "*" always;\n'
        f'        add_header Access-Control-Expose-Headers "{EXPOSE}" always;\n'
        '        add_header Access-Control-Allow-Methods "GET, HEAD, OPTIONS" always;\n'
        '        add_header Access-Control-Allow-Headers '
        '"Range, If-None-Match, If-Modified-Since, If-Range, Accept-Encoding, '
        'Want-Repr-Digest" always;\n'
        '        add_header Access-Control-Max-Age 86400 always;\n'
        "        if ($request_method = OPTIONS) { return 204; }\n"
        "        limit_except GET HEAD OPTIONS { deny all; }\n"
    )


def _location(pattern: str, alias: str, cache_control: str, trusted: str | None = None) -> str:
    """A regex location serving ``alias``; symlinks are refused below ``trusted``
    (the ``ROOT/<name>`` link the server swaps on publish), or anywhere if None."""
    head = f'    location ~ "{pattern}" {{\n        alias "{alias}";\n'
    nofollow = (
        f"        disable_symlinks on from={trusted};\n" if trusted is not None
        else "        disable_symlinks on;\n"
    )
    return f"{head}{nofollow}{_headers(cache_control)}    }}\n"


def _q(value: str) -> str:
    """An nginx double-quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _manifests(root: Path) -> list[tuple[str, Manifest]]:
    """(URL prefix, manifest) of every current and kept version below ``root``."""
    out: list[tuple[str, Manifest]] = []
    for pkg in sorted(root.iterdir()):
        name = pkg.name
        if name in (STATE_DIR, VERSIONS_DIR) or not check_package_name(name):
            continue
        dirs = [(f"/packages/{name}/files/", pkg)]
        vdir = root / VERSIONS_DIR / name
        if vdir.is_dir():
            dirs += [(f"/packages/{name}/versions/{v.name}/files/", v)
                     for v in sorted(vdir.iterdir()) if v.name.isdigit()]
        for prefix, d in dirs:
            try:
                out.append((prefix, read_manifest_file(d / MANIFEST_NAME)))
            except AuraSealError:
                continue  # not a package (nginx serves nothing from it either)
    return out


def _maps(root: Path, integrity_policy: str | None) -> str:
    """``map`` blocks giving each served file its signature and digest headers
    (from the manifests: signed once at seal time), and HTML responses the
    Integrity-Policy headers."""
    values: dict[str, dict[str, str]] = {v: {} for _, v in _SIG_HEADERS}
    for prefix, manifest in _manifests(root):
        for f in manifest.files:
            uris = [(prefix + f.path, f.integrity, f.path)]
            uris += [(prefix + n, p.integrity, n) for n, p in zip(
                f.part_names(), f.recovery.parts if f.recovery else (), strict=True)]
            for uri, integ, rel in uris:
                if not _SAFE.match(uri):
                    continue
                if rel == f.path and f.http is not None:
                    for (_, var), (_, val) in zip(_SIG_HEADERS, f.http.headers(), strict=False):
                        values[var][uri] = val
                if content_type_for(rel) not in COMPRESSIBLE:  # nginx may gzip those
                    rd = repr_digest_for((integ,))
                    if rd is not None:
                        values["auraseal_repr_digest"][uri] = rd
    out = [
        "# generated by auraseal nginx-conf: re-run it (and reload nginx) after a publish\n",
        "map_hash_bucket_size 256;\nmap_hash_max_size 65536;\n",
    ]
    for var, table in values.items():
        out.append(f"map $uri ${var} {{\n    default \"\";\n")
        out.extend(f"    {_q(uri)} {_q(val)};\n" for uri, val in sorted(table.items()))
        out.append("}\n")
    policy = dict(integrity_policy_headers(integrity_policy))
    for var, header in (
        ("auraseal_integrity_policy", "Integrity-Policy"),
        ("auraseal_integrity_policy_report_only", "Integrity-Policy-Report-Only"),
        ("auraseal_reporting_endpoints", "Reporting-Endpoints"),
    ):
        value = policy.get(header)
        body = f"    ~^text/html {_q(value)};\n" if value else ""
        out.append(f"map $sent_http_content_type ${var} {{\n    default \"\";\n{body}}}\n")
    return "".join(out)


def render_nginx_conf(
    root: Path,
    *,
    server_name: str = "_",
    listen: str = "80",
    upstream: str | None = None,
    manifest_max_age: int = 3600,
    standalone: Path | None = None,
    workers: int = 2,
    integrity_policy: str | None = None,
) -> str:
    """The nginx configuration for ``root``.

    Without ``standalone``: a ``server { ... }`` block to include in ``http {}``.
    With ``standalone=DIR``: a complete ``nginx.conf`` that keeps its pid file,
    logs and temp files in DIR and runs in the foreground (``daemon off``).
    """
    real = str(Path(root).resolve())
    _check(real, "ROOT")
    _check(server_name, "--server-name")
    _check(listen, "--listen")
    if upstream is not None:
        _check(upstream, "--upstream")
    vroot = f"{real}/{VERSIONS_DIR}"
    gz = " ".join(sorted(t for t in COMPRESSIBLE if t != "text/html"))
    manifest_cc = f"public, max-age={manifest_max_age}"
    out = [
        _maps(Path(root), integrity_policy),
        "server {\n",
        f"    listen {listen};\n",
        f"    server_name {server_name};\n",
        "    server_tokens off;\n",
        "    sendfile on;\n    tcp_nopush on;\n    etag on;\n",
        "    charset utf-8;\n    charset_types text/css text/plain text/xml;\n",
        f"    gzip on;\n    gzip_types {gz};\n    gzip_vary on;\n",
        "    gzip_min_length 256;\n    gzip_comp_level 6;\n    gzip_proxied any;\n",
        "    disable_symlinks on;\n",
        _types(),
        "\n    # temp files of a repair or publish in progress are never served\n",
        '    location ~ "\\.auraseal-tmp-" {\n        return 404;\n    }\n',
        "\n    # current version: ROOT/<name>/ (a symlink the server swaps on publish);\n"
        "    # no symlink below it is followed\n",
        _location(f"^/packages/{NAME}/integrity-manifest\\.json$",
                  f"{real}/$1/integrity-manifest.json", manifest_cc, f"{real}/$1"),
        _location(f"^/packages/{NAME}/files/integrity-manifest\\.json$",
                  f"{real}/$1/integrity-manifest.json", manifest_cc, f"{real}/$1"),
        "\n    # roots and timestamps: ROOT/.freshness/ (server/freshness.py)\n",
        f'    location ~ "^/packages/{NAME}/files/root/([1-9][0-9]{{0,8}})\\.json$" {{\n'
        f'        root "{real}/{FRESHNESS_DIR}";\n'
        "        try_files /$1/root/$2.json /root/$2.json =404;\n"
        "        disable_symlinks on;\n"
        f'{_headers("no-cache")}    }}\n',
        _location(f"^/packages/{NAME}/files/timestamp\\.json$",
                  f"{real}/{FRESHNESS_DIR}/$1/timestamp.json", "no-cache"),
        _location(f"^/packages/{NAME}/files/(.+)$", f"{real}/$1/$2", "public, no-cache",
                  f"{real}/$1"),
        "\n    # kept versions: ROOT/.versions/<name>/<version>/ (immutable)\n",
        _location(f"^/packages/{NAME}/versions/([0-9]+)/integrity-manifest\\.json$",
                  f"{vroot}/$1/$2/integrity-manifest.json", IMMUTABLE),
        _location(f"^/packages/{NAME}/versions/([0-9]+)/files/(.+)$",
                  f"{vroot}/$1/$2/$3", IMMUTABLE),
    ]
    if upstream is not None:
        out.append(
            "\n    # publishing, archives, the ledger and the dashboard stay in Python\n"
            "    location / {\n"
            f"        proxy_pass {upstream};\n"
            "        proxy_set_header Host $host;\n"
            "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            "        client_max_body_size 1g;\n"
            "        proxy_request_buffering off;\n"
            "    }\n"
        )
    else:
        out.append("\n    location / {\n        return 404;\n    }\n")
    out.append("}\n")
    server = "".join(out)
    if standalone is None:
        return server
    d = str(Path(standalone).resolve())
    _check(d, "standalone directory")
    indented = "".join("    " + line if line.strip() else line
                       for line in server.splitlines(keepends=True))
    return (
        "daemon off;\n"
        f"worker_processes {workers};\n"
        f"pid {d}/nginx.pid;\n"
        f"error_log {d}/error.log warn;\n"
        "events {\n    worker_connections 1024;\n}\n"
        "http {\n"
        f"    access_log {d}/access.log;\n"
        f"    client_body_temp_path {d}/client_body;\n"
        f"    proxy_temp_path {d}/proxy;\n"
        f"    fastcgi_temp_path {d}/fastcgi;\n"
        f"    uwsgi_temp_path {d}/uwsgi;\n"
        f"    scgi_temp_path {d}/scgi;\n"
        f"{indented}"
        "}\n"
    )
