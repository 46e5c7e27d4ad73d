"""Fixtures for the client tests: signed packages served by a fault-injecting
HTTP server on 127.0.0.1 (a primary and a mirror)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auraseal.client import FetchReport, fetch_package
from auraseal.signing import SigningKey, TrustPolicy

from .faultserver import FaultServer, fault_server
from .helpers import FAST, FILES_V1, write_package


@pytest.fixture(scope="session")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="session")
def other_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def policy(key: SigningKey) -> TrustPolicy:
    return TrustPolicy([key.public])


@pytest.fixture
def pkg(tmp_path: Path, key: SigningKey) -> Path:
    root = tmp_path / "srv" / "primary"
    write_package(root, FILES_V1, [key])
    return root


@pytest.fixture
def mirror_pkg(tmp_path: Path, key: SigningKey) -> Path:
    root = tmp_path / "srv" / "mirror"
    write_package(root, FILES_V1, [key])
    return root


@pytest.fixture
def primary(pkg: Path) -> Iterator[FaultServer]:
    with fault_server(pkg) as s:
        yield s


@pytest.fixture
def mirror(mirror_pkg: Path) -> Iterator[FaultServer]:
    with fault_server(mirror_pkg) as s:
        yield s


class Client:
    """Calls :func:`fetch_package` with the test's cache, dest and limits."""

    def __init__(self, tmp: Path, policy: TrustPolicy) -> None:
        self.dest = tmp / "out" / "site"
        self.cache = tmp / "cache"
        self.policy = policy
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, url: str, **kw: Any) -> FetchReport:
        kw.setdefault("policy", self.policy)
        if kw["policy"] is None:  # a test asking for no keys means unsigned, explicitly
            kw.setdefault("allow_unsigned", True)
        kw.setdefault("cache_dir", self.cache)
        kw.setdefault("http", FAST)
        kw.setdefault("jobs", 4)
        kw.setdefault("events", self)
        return fetch_package(url, kw.pop("dest", self.dest), **kw)

    def record(self, entry_type: str, data: dict[str, Any]) -> None:
        """The fetch's event sink (:class:`auraseal.events.EventSink`)."""
        self.events.append((entry_type, data))


@pytest.fixture
def client(tmp_path: Path, policy: TrustPolicy) -> Client:
    return Client(tmp_path, policy)
