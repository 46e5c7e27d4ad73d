"""Configuration of ``auraseal serve`` (one frozen dataclass, no globals)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from auraseal.errors import ConfigError
from auraseal.signing import PublicKey, TrustPolicy

__all__ = ["PACKAGE_NAME_RE", "STATE_DIR", "VERSIONS_DIR", "ServerConfig", "check_package_name"]

#: Package names: what can safely be a URL segment and a directory name.
PACKAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Server state below ROOT (never served): tokens, trust state, ledger, uploads.
STATE_DIR = ".auraseal"
#: Immutable unpacked versions below ROOT: ``.versions/<name>/<version>/``.
VERSIONS_DIR = ".versions"


def check_package_name(name: str) -> bool:
    return bool(PACKAGE_NAME_RE.match(name)) and ".." not in name


@dataclass(frozen=True)
class ServerConfig:
    """Everything :func:`auraseal.server.app.create_app` needs.

    ``root`` holds one directory per package (``ROOT/<name>/`` with its
    ``integrity-manifest.json``); ``trusted_keys``/``threshold`` decide which
    publishes are accepted; ``publish_token_file`` lists SHA-256 hashes of the
    bearer tokens allowed to publish (see ``docs/SERVER.md``).
    """

    root: Path
    host: str = "127.0.0.1"
    port: int = 8000
    ledger_url: str | None = None
    ledger_jsonl: Path | None = None
    trusted_keys: tuple[PublicKey, ...] = ()
    threshold: int = 1
    publish_token_file: Path | None = None
    max_upload_bytes: int = 1 << 30
    max_unpacked_bytes: int = 4 << 30
    max_entries: int = 100_000
    max_ratio: int = 200
    scrub_interval: float = 3600.0
    commit_interval: float = 300.0
    keep_versions: int = 3
    manifest_max_age: int = 3600
    cors_origin: str = "*"
    healing: bool = True
    small_file_cache_bytes: int = 64 << 20
    #: warn (log event ``expiry_warning``) when a manifest expires within this many seconds
    expiry_warning: float = 7 * 86400.0
    #: ``enforce`` or ``report-only``: HTML responses carry Integrity-Policy (docs/SERVER.md)
    integrity_policy: str | None = None
    #: tlog-witnesses (base URLs) every new checkpoint is submitted to (docs/LEDGER.md §1.9)
    witness_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ConfigError("threshold must be at least 1", "--threshold")
        if self.trusted_keys and self.threshold > len(self.trusted_keys):
            raise ConfigError("threshold exceeds the number of trusted keys", "--threshold")
        if self.integrity_policy not in (None, "enforce", "report-only"):
            raise ConfigError("integrity policy must be enforce or report-only",
                              "--integrity-policy")
        for url in self.witness_urls:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ConfigError(f"witness URL must be http:// or https://, not {url!r}",
                                  "--witness-url")
        if self.max_upload_bytes < 1:
            raise ConfigError("max upload size must be positive", "max_upload_bytes")

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def policy(self) -> TrustPolicy | None:
        if not self.trusted_keys:
            return None
        return TrustPolicy(list(self.trusted_keys), self.threshold)

    @property
    def ledger_location(self) -> str:
        """The ledger URL, defaulting to an embedded SQLite file under the state dir."""
        if self.ledger_url:
            return self.ledger_url
        return f"sqlite://{(self.state_dir / 'ledger.sqlite3').resolve()}"
