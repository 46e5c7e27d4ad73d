"""Test driver: run one install step sequence in a subprocess and die at step N.

``python killdriver.py '<json>'`` with keys: ``op`` ("install", "rollback",
"fetch"), ``dest``, ``kill_at`` (the step number to ``os._exit(KILLED)`` at;
-1 never), ``steps`` (a file each step name is appended to), ``native``
(False: the three-rename exchange). "install": ``version`` and ``files``
(name -> latin-1 text); "fetch": ``url``, ``cache``, ``pub`` (a public key
PEM file).
"""

from __future__ import annotations

import errno
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

from auraseal.client import install

KILLED = 77


def main() -> None:
    a = json.loads(sys.argv[1])
    count = 0
    steps = Path(a["steps"])

    def step(name: str) -> None:
        nonlocal count
        with open(steps, "a") as fh:
            fh.write(name + "\n")
        if count == a["kill_at"]:
            os._exit(KILLED)
        count += 1

    if not a.get("native", True):
        install.rename_exchange = lambda a, b: errno.ENOSYS  # type: ignore[attr-defined]
    dest = Path(a["dest"])
    if a["op"] == "install":
        st = install.Staging(dest)
        for rel, text in a["files"].items():
            st.file(rel).write_bytes(text.encode("latin-1"))
        v = a["version"]
        inst = install.Installed("app", v, f"{v:064x}", "http://127.0.0.1/", "2026-11-22T03:00:00Z")
        install.swap_in(st, inst, step)
    elif a["op"] == "rollback":
        install.rollback(dest, step)
    else:
        from auraseal.client import HttpConfig, fetch_package  # noqa: PLC0415
        from auraseal.signing import TrustPolicy, load_public_key  # noqa: PLC0415

        policy = TrustPolicy([load_public_key(Path(a["pub"]))])
        hook = {} if a["kill_at"] < 0 else {"step": step}
        fetch_package(
            a["url"], dest, policy=policy, cache_dir=Path(a["cache"]), **hook,
            http=HttpConfig(timeout=60.0, min_rate=1, grace=60.0, trust_env=False),
            manifest_ttl=timedelta(0),
        )
    os._exit(0)


if __name__ == "__main__":
    main()
