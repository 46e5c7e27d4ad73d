"""Fixtures: a sealed ROOT, publisher keys, tokens, and the real server on loopback."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from _servers import run_server

from auraseal._fs import is_temp_name
from auraseal.manifest import MANIFEST_NAME
from auraseal.sealing import seal_tree
from auraseal.server.publish import new_token
from auraseal.signing import SigningKey

EXAMPLE = Path(str(resources.files("auraseal.examples").joinpath("site")))


@pytest.fixture(scope="session")
def publisher_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="session")
def sealed_versions(
    tmp_path_factory: pytest.TempPathFactory, publisher_key: SigningKey
) -> dict[int, Path]:
    """The example site sealed as package 'site' versions 1..3 (directories)."""
    base = tmp_path_factory.mktemp("sealed")
    out = {}
    for v in (1, 2, 3):
        d = base / f"site-v{v}"
        seal_tree(EXAMPLE, d, keys=[publisher_key], name="site", version=v)
        out[v] = d
    return out


def zip_dir(d: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(d.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(d).as_posix())
    return buf.getvalue()


@pytest.fixture(scope="session")
def site_zip(sealed_versions: dict[int, Path]) -> Callable[[int], bytes]:
    cache: dict[int, bytes] = {}

    def get(version: int) -> bytes:
        if version not in cache:
            cache[version] = zip_dir(sealed_versions[version])
        return cache[version]

    return get


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)


@pytest.fixture
def root(tmp_path: Path, sealed_versions: dict[int, Path]) -> Path:
    """A fresh ROOT serving 'site' version 1 (a plain directory)."""
    r = tmp_path / "root"
    r.mkdir()
    copy_tree(sealed_versions[1], r / "site")
    return r


@pytest.fixture
def token(tmp_path: Path) -> tuple[str, Path]:
    tok, line = new_token()
    f = tmp_path / "tokens.txt"
    f.write_text("# publishers\n" + line + "  ci\n")
    return tok, f


@pytest.fixture
def serve(
    publisher_key: SigningKey, token: tuple[str, Path]
) -> Iterator[Callable[..., str]]:
    """Start the real server (uvicorn on 127.0.0.1:<free port>); returns its base URL."""
    stack = contextlib.ExitStack()

    def start(root: Path, **config: Any) -> str:
        config.setdefault("trusted_keys", (publisher_key.public,))
        config.setdefault("publish_token_file", token[1])
        config.setdefault("commit_interval", 0.3)
        return stack.enter_context(run_server(root, **config))

    with stack:
        yield start


@pytest.fixture
def base_url(root: Path, serve: Callable[..., str]) -> str:
    return serve(root)


def tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every served file below ROOT (ledger/state files excluded) with size and mtime."""
    out = {}
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        if rel_dir.startswith(".auraseal"):
            continue
        for f in files:
            p = Path(dirpath) / f
            st = p.lstat()
            out[(Path(rel_dir) / f).as_posix()] = (st.st_size, st.st_mtime_ns)
    link = root / "site"
    out["site -> "] = (int(link.is_symlink()), 0)
    if link.is_symlink():
        out["site -> " + os.readlink(link)] = (0, 0)
    return out


def uploads_empty(root: Path) -> bool:
    """No upload, staging directory or archive temp left (old and new temp names)."""
    up = root / ".auraseal" / "uploads"
    vr = root / ".versions"
    staging = [p for p in vr.rglob(".*") if p.name.startswith(".staging-") or is_temp_name(p.name)
               ] if vr.exists() else []
    zips = root / ".auraseal" / "zips"
    ztemps = [p for p in zips.iterdir() if is_temp_name(p.name)] if zips.exists() else []
    return (not up.exists() or not any(up.iterdir())) and not staging and not ztemps


def manifest_bytes(d: Path) -> bytes:
    return (d / MANIFEST_NAME).read_bytes()
