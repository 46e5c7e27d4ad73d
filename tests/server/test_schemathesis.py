"""Schemathesis against /openapi.json of the real server: no 5xx, responses
match the documented schema, status codes and content types."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from _servers import run_server
from hypothesis import HealthCheck, given, settings
from schemathesis import checks as sc

from auraseal.server.publish import new_token
from auraseal.signing import SigningKey


@pytest.fixture(scope="module")
def api_url(
    tmp_path_factory: pytest.TempPathFactory, sealed_versions: dict[int, Path],
    publisher_key: SigningKey,
) -> Iterator[tuple[str, str]]:
    import shutil  # noqa: PLC0415

    root = tmp_path_factory.mktemp("schemathesis") / "root"
    root.mkdir()
    shutil.copytree(sealed_versions[1], root / "site")
    tok, line = new_token()
    tokens = root.parent / "tokens.txt"
    tokens.write_text(line + "\n")
    with run_server(root, trusted_keys=(publisher_key.public,), commit_interval=0.3,
                    publish_token_file=tokens) as url:
        yield url, tok


CHECKS = [sc.not_a_server_error, sc.status_code_conformance, sc.content_type_conformance,
          sc.response_schema_conformance]


def test_api_conforms(api_url: tuple[str, str]) -> None:
    """Every documented operation, a bounded number of generated examples each;
    authenticated, so publish and ledger writes are fuzzed past the token check."""
    url, tok = api_url
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 15
    calls = 0
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=int(os.environ.get("AURASEAL_ST_EXAMPLES", "15")), deadline=None,
                  database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(checks=CHECKS, headers={"authorization": f"Bearer {tok}"})

        run()
    assert calls >= len(operations)
    metrics = httpx.get(f"{url}/metrics").text
    # generated uploads got past the token check and were refused by the publish checks
    assert 'auraseal_publishes_total{result="refused"}' in metrics
    assert 'auraseal_publishes_total{result="unauthorized"}' not in metrics
