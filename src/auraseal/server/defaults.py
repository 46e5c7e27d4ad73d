"""The embedded defaults of ``auraseal serve`` with no options.

ROOT defaults to ``<user data dir>/auraseal/serve`` (platformdirs); the
bundled example site (``auraseal/examples/site``) is sealed into it as
package ``site`` on first start, signed by a publisher key kept in
``ROOT/.auraseal/publisher.key`` (whose public half the server then trusts).
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import platformdirs

from auraseal.manifest import MANIFEST_NAME
from auraseal.server.config import STATE_DIR, ServerConfig, check_package_name
from auraseal.signing import PublicKey, generate_keypair, load_public_key, load_signing_key

__all__ = [
    "CONFIG_ENV",
    "EXAMPLE_NAME",
    "config_from_env",
    "config_to_env",
    "default_root",
    "ensure_example",
    "publisher_key_path",
]

EXAMPLE_NAME = "site"
CONFIG_ENV = "AURASEAL_SERVE_CONFIG"


def default_root() -> Path:
    return platformdirs.user_data_path("auraseal") / "serve"


def publisher_key_path(root: Path) -> Path:
    return Path(root) / STATE_DIR / "publisher.key"


def _has_packages(root: Path) -> bool:
    if not root.is_dir():
        return False
    return any(
        check_package_name(n) and (root / n / MANIFEST_NAME).is_file() for n in os.listdir(root)
    )


def ensure_example(root: Path) -> bool:
    """Seal the bundled example site into ``root`` if it holds no package yet.

    Returns True when it sealed it now.
    """
    from auraseal.sealing import seal_tree  # noqa: PLC0415

    root = Path(root)
    if _has_packages(root):
        return False
    (root / STATE_DIR).mkdir(parents=True, exist_ok=True)
    kpath = publisher_key_path(root)
    key = load_signing_key(kpath) if kpath.exists() else generate_keypair(kpath)
    src = Path(str(resources.files("auraseal.examples").joinpath("site")))
    seal_tree(
        src, root / EXAMPLE_NAME, keys=[key], name=EXAMPLE_NAME, version=1,
        expires=timedelta(days=365),
    )
    return True


def local_publisher_key(root: Path) -> PublicKey | None:
    """The public half of ROOT's own publisher key, if there is one."""
    pub = Path(str(publisher_key_path(root)) + ".pub")
    return load_public_key(pub) if pub.is_file() else None


def config_to_env(config: ServerConfig) -> str:
    """Serialize ``config`` for worker processes (``--workers N``)."""
    d: dict[str, Any] = {}
    for f in fields(config):
        v = getattr(config, f.name)
        if f.name == "trusted_keys":
            d[f.name] = [k.raw.hex() for k in v]
        elif isinstance(v, Path):
            d[f.name] = str(v)
        else:
            d[f.name] = v
    return json.dumps(d)


def config_from_env() -> ServerConfig:
    """The inverse of :func:`config_to_env`, reading ``$AURASEAL_SERVE_CONFIG``."""
    d = json.loads(os.environ[CONFIG_ENV])
    kw: dict[str, Any] = dict(d)
    kw["trusted_keys"] = tuple(PublicKey.from_raw(bytes.fromhex(h)) for h in d["trusted_keys"])
    for name in ("root", "ledger_jsonl", "publish_token_file"):
        if kw.get(name) is not None:
            kw[name] = Path(kw[name])
    return ServerConfig(**kw)


