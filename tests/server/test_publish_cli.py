"""`auraseal publish` against the real server: upload, idempotency, refusals, retries."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from _servers import free_port

from auraseal.cli import main as cli_main
from auraseal.manifest import MANIFEST_NAME
from auraseal.server.publish import new_token

from .conftest import manifest_bytes, tree_snapshot


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _token_file(tmp_path: Path, token: str) -> Path:
    f = tmp_path / "publish.token"
    f.write_text(token + "\n")
    return f


def test_publish_directory_then_again_is_a_noop(
    root: Path, serve: Callable[..., str], token: tuple[str, Path],
    sealed_versions: dict[int, Path], tmp_path: Path,
) -> None:
    url = serve(root)
    tf = _token_file(tmp_path, token[0])
    rc, out, err = run_cli("publish", str(sealed_versions[2]), url, "--token-file", str(tf),
                           "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["status"] == "published" and doc["version"] == 2 and doc["package"] == "site"
    served = httpx.get(f"{url}/packages/site/files/{MANIFEST_NAME}").content
    assert served == manifest_bytes(sealed_versions[2])
    # the same version with the same content again: exit 0, nothing changes
    before = tree_snapshot(root)
    rc, out, err = run_cli("publish", str(sealed_versions[2]), url, "--token-file", str(tf))
    assert rc == 0, err
    assert out.startswith("unchanged: site v2")
    assert tree_snapshot(root) == before
    assert not list(Path("/tmp").glob(".package.auraseal-tmp-publish-*"))  # temp zip removed


def test_publish_zip_with_token_from_environment(
    root: Path, serve: Callable[..., str], token: tuple[str, Path],
    site_zip: Callable[[int], bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = serve(root)
    z = tmp_path / "site-v3.zip"
    z.write_bytes(site_zip(3))
    monkeypatch.setenv("AURASEAL_TOKEN", token[0])
    rc, out, err = run_cli("publish", str(z), url)
    assert rc == 0, err
    assert "published site v3" in out


def test_publish_older_version_is_refused_exit_3(
    root: Path, serve: Callable[..., str], token: tuple[str, Path],
    sealed_versions: dict[int, Path], tmp_path: Path,
) -> None:
    url = serve(root)
    tf = _token_file(tmp_path, token[0])
    assert run_cli("publish", str(sealed_versions[3]), url, "--token-file", str(tf))[0] == 0
    before = tree_snapshot(root)
    rc, _out, err = run_cli("publish", str(sealed_versions[2]), url, "--token-file", str(tf))
    assert rc == 3
    assert err.startswith("auraseal: error: ") and err.count("\n") == 1
    assert tree_snapshot(root) == before


def test_publish_with_wrong_token_is_refused_exit_3(
    root: Path, serve: Callable[..., str], sealed_versions: dict[int, Path], tmp_path: Path,
) -> None:
    url = serve(root)
    before = tree_snapshot(root)
    tf = _token_file(tmp_path, new_token()[0])
    rc, _out, err = run_cli("publish", str(sealed_versions[2]), url, "--token-file", str(tf))
    assert rc == 3
    assert "bearer token" in err and err.count("\n") == 1
    assert tree_snapshot(root) == before


def test_publish_larger_than_server_limit_is_refused_exit_2(
    root: Path, serve: Callable[..., str], token: tuple[str, Path],
    sealed_versions: dict[int, Path], tmp_path: Path,
) -> None:
    url = serve(root, max_upload_bytes=10_000)
    tf = _token_file(tmp_path, token[0])
    rc, _out, err = run_cli("publish", str(sealed_versions[2]), url, "--token-file", str(tf))
    assert rc == 2
    assert "larger than" in err


def test_publish_without_a_token_is_a_usage_error(
    sealed_versions: dict[int, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AURASEAL_TOKEN", raising=False)
    rc, _out, err = run_cli("publish", str(sealed_versions[2]), "http://127.0.0.1:9")
    assert rc == 2
    assert "AURASEAL_TOKEN" in err


def test_publish_of_a_folder_that_is_not_a_package_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "plain"
    d.mkdir()
    (d / "a.txt").write_text("x")
    rc, _out, err = run_cli("publish", str(d), "http://127.0.0.1:9", "--token-file",
                            str(_token_file(tmp_path, "t")))
    assert rc == 2 and "not a sealed package" in err


def test_publish_to_nothing_listening_fails_exit_5_after_retries(
    sealed_versions: dict[int, Path], tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    rc, _out, err = run_cli("publish", str(sealed_versions[2]), url, "--token-file",
                            str(_token_file(tmp_path, "t")), "--retries", "1")
    assert rc == 5
    assert "after 2 attempts" in err


@contextlib.contextmanager
def _flaky_proxy(target: str, failures: int) -> Iterator[tuple[str, list[int]]]:
    """A loopback HTTP server answering 503 ``failures`` times, then forwarding to ``target``."""
    seen: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _forward(self) -> None:
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n) if n else b""
            if self.command == "PUT" and len(seen) < failures:
                seen.append(503)
                self.send_response(503)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() in ("authorization", "content-type")}
            r = httpx.request(self.command, target + self.path, content=body, headers=headers,
                              timeout=60)
            seen.append(r.status_code)
            self.send_response(r.status_code)
            self.send_header("content-length", str(len(r.content)))
            self.send_header("content-type", r.headers.get("content-type", "text/plain"))
            self.end_headers()
            self.wfile.write(r.content)

        do_GET = do_PUT = _forward

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    finally:
        srv.shutdown()
        srv.server_close()


def test_publish_retries_transient_503_then_succeeds(
    root: Path, serve: Callable[..., str], token: tuple[str, Path],
    sealed_versions: dict[int, Path], tmp_path: Path,
) -> None:
    url = serve(root)
    with _flaky_proxy(url, failures=2) as (proxy, seen):
        rc, _out, err = run_cli("publish", str(sealed_versions[2]), proxy, "--token-file",
                                str(_token_file(tmp_path, token[0])))
    assert rc == 0, err
    assert seen[:3] == [503, 503, 201]


def test_publish_bad_arguments(sealed_versions: dict[int, Path], tmp_path: Path) -> None:
    tf = str(_token_file(tmp_path, "t"))
    assert run_cli("publish", str(sealed_versions[2]), "http://x", "--token-file", tf,
                   "--retries", "-1")[0] == 2
    missing = tmp_path / "nope"
    rc, _o, err = run_cli("publish", str(missing), "http://x", "--token-file", tf)
    assert rc == 2 and "no such file" in err
