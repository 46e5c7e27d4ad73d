"""Sealed packages: compression, part files, Reed-Solomon parity, unseal,
scrub and self-healing repair (``docs/FORMAT.md``).

Public API::

    seal_tree(src, out, *, part_size=5120, coherence=0.954, codec="zstd", keys=(), ...)
    open_package(path_or_zip, *, policy=None) -> Package       # a context manager
    scrub(pkg) -> ScrubReport          # intact / recoverable (coherence) / lost per file
    repair(pkg) -> RepairReport        # in place; repair_path(path) also handles a zip
    unseal(pkg, out) -> UnsealReport   # raises ComponentLostError (exit 4) if a file is lost
    rebuild_component(entry, {number: part_bytes}) -> bytes   # for parts fetched over HTTP
    verify_part(entry, number, part_bytes)                    # one part against the manifest
"""

from __future__ import annotations

from auraseal.sealing.codecs import CODEC_NAMES
from auraseal.sealing.component import (
    DEFAULT_COHERENCE,
    DEFAULT_PART_SIZE,
    ComponentSpec,
    Plan,
    coherence_parity,
    plan_component,
)
from auraseal.sealing.format import PartFooter, PartHeader, build_part, parse_part
from auraseal.sealing.package import Package, check_zip, extract_zip, open_package
from auraseal.sealing.scrub import (
    ComponentReport,
    RepairReport,
    ScrubReport,
    check_component,
    repair,
    repair_path,
    scrub,
)
from auraseal.sealing.seal import SealOptions, seal_tree
from auraseal.sealing.unseal import (
    UnsealReport,
    parts_from_copy,
    parts_from_original,
    rebuild_component,
    rebuild_file,
    unseal,
    verify_part,
)

__all__ = [
    "CODEC_NAMES",
    "DEFAULT_COHERENCE",
    "DEFAULT_PART_SIZE",
    "ComponentReport",
    "ComponentSpec",
    "Package",
    "PartFooter",
    "PartHeader",
    "Plan",
    "RepairReport",
    "ScrubReport",
    "SealOptions",
    "UnsealReport",
    "build_part",
    "check_component",
    "check_zip",
    "coherence_parity",
    "extract_zip",
    "open_package",
    "parse_part",
    "parts_from_copy",
    "parts_from_original",
    "plan_component",
    "rebuild_component",
    "rebuild_file",
    "repair",
    "repair_path",
    "scrub",
    "seal_tree",
    "unseal",
    "verify_part",
]
