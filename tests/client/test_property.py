"""Property: whatever mix of faults the primary and a mirror inject, a fetch
either installs every byte exactly or refuses with DIR untouched — and it
succeeds exactly when each file has an intact copy somewhere."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auraseal.errors import AuraSealError

from .conftest import Client
from .faultserver import FaultServer
from .helpers import FILES_V1, snapshot

FAULTS = [None, "flip", "short", "truncate", "endless", "404", "500", "other"]
_counter = itertools.count()


def _apply(srv: FaultServer, path: str, kind: str | None) -> None:
    if kind is None:
        return
    if kind in ("404", "500"):
        srv.fault(path, "status", status=int(kind))
    elif kind == "other":
        srv.fault(path, "body", body=b"another version of " + path.encode())
    else:
        srv.fault(path, kind)


@settings(
    max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    faults=st.lists(
        st.tuples(st.sampled_from(FAULTS), st.sampled_from(FAULTS)),
        min_size=len(FILES_V1), max_size=len(FILES_V1),
    ),
    preinstalled=st.booleans(),
)
def test_any_fault_mix_installs_exactly_or_leaves_dir_untouched(
    client: Client,
    primary: FaultServer,
    mirror: FaultServer,
    tmp_path: Path,
    faults: list[tuple[str | None, str | None]],
    preinstalled: bool,
) -> None:
    n = next(_counter)
    dest = tmp_path / f"d{n}" / "site"
    cache = tmp_path / f"c{n}"
    primary.clear()
    mirror.clear()
    if preinstalled:
        client(primary.url, dest=dest, cache_dir=tmp_path / f"seed{n}")
        # make the installed copy useless as a source: a different file set
        (dest / "extra.txt").write_bytes(b"x")
        for rel in FILES_V1:
            (dest / rel).write_bytes(b"stale")
    before = snapshot(dest)
    for path, (fp, fm) in zip(sorted(FILES_V1), faults, strict=True):
        _apply(primary, path, fp)
        _apply(mirror, path, fm)
    possible = all(fp is None or fm is None for fp, fm in faults)
    try:
        r = client(primary.url, mirrors=[mirror.url], dest=dest, cache_dir=cache)
    except AuraSealError as exc:
        assert not possible, f"refused although every file had a good copy: {exc}"
        assert exc.exit_code in (1, 5)
        assert snapshot(dest) == before
        assert [p for p in dest.parent.iterdir() if "stage" in p.name] == []
        return
    assert possible
    assert snapshot(dest) == FILES_V1
    for f, (fp, _) in zip(sorted(r.files, key=lambda f: f.path), faults, strict=True):
        assert f.source == ("primary" if fp is None else "mirror 1")
