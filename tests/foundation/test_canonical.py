"""Canonical JSON: the fast path agrees with the rfc8785 reference everywhere."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from auraseal._canonical import canonical_json
from auraseal.errors import InputError

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
docs = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(docs)
def test_matches_reference(doc: object) -> None:
    assert canonical_json(doc) == rfc8785.dumps(doc)


def test_rfc8785_examples() -> None:
    # Key order by UTF-16 code units (RFC 8785 §3.2.3): U+1F600 sorts before U+FB33.
    doc = {"\ufb33": 1, "\U0001f600": 2, "\r": 3, "1": 4, "\u00e9": 5}
    assert canonical_json(doc) == rfc8785.dumps(doc)
    assert canonical_json({"a": "\u2028\x1f\"\\"}) == b'{"a":"\xe2\x80\xa8\\u001f\\"\\\\"}'
    assert canonical_json({"n": 1.0, "m": 1e21}) == b'{"m":1e+21,"n":1}'


def test_unrepresentable_is_input_error() -> None:
    with pytest.raises(InputError):
        canonical_json({"big": 2**60})
    with pytest.raises(InputError):
        canonical_json({"x": "\ud800"})
