"""Schemathesis against /openapi.json of the real server: no 5xx, responses
match the documented schema, status codes and content types."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks as sc

from auraseal.server.testing import run_server
from auraseal.signing import SigningKey


@pytest.fixture(scope="module")
def api_url(
    tmp_path_factory: pytest.TempPathFactory, sealed_versions: dict[int, Path],
    publisher_key: SigningKey,
) -> Iterator[str]:
    import shutil  # noqa: PLC0415

    root = tmp_path_factory.mktemp("schemathesis") / "root"
    root.mkdir()
    shutil.copytree(sealed_versions[1], root / "site")
    with run_server(root, trusted_keys=(publisher_key.public,), commit_interval=0.3) as url:
        yield url


CHECKS = [sc.not_a_server_error, sc.status_code_conformance, sc.content_type_conformance,
          sc.response_schema_conformance]


def test_api_conforms(api_url: str) -> None:
    """Every documented operation, a bounded number of generated examples each."""
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 15
    calls = 0
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=15, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(checks=CHECKS)

        run()
    assert calls >= len(operations)
