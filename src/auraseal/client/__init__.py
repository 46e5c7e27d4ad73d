"""``auraseal fetch`` as a library: cached, verified, mirrored, self-repairing,
atomic installs (see ``docs/CLIENT.md``).

>>> report = fetch_package("http://127.0.0.1:8000/pkg/", Path("site"))  # doctest: +SKIP
"""

from __future__ import annotations

from auraseal.client.blockhub import Source, make_source
from auraseal.client.cache import Cache
from auraseal.client.fetch import (
    DEFAULT_FILE_TTL,
    DEFAULT_JOBS,
    DEFAULT_MANIFEST_TTL,
    FetchProgress,
    FetchReport,
    FileReport,
    fetch_package,
)
from auraseal.client.http import Fetcher, HttpConfig
from auraseal.client.install import InstallRecord, read_record, rollback

__all__ = [
    "DEFAULT_FILE_TTL",
    "DEFAULT_JOBS",
    "DEFAULT_MANIFEST_TTL",
    "Cache",
    "FetchProgress",
    "FetchReport",
    "Fetcher",
    "FileReport",
    "HttpConfig",
    "InstallRecord",
    "Source",
    "fetch_package",
    "make_source",
    "read_record",
    "rollback",
]
