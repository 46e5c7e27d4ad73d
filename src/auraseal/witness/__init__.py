"""A C2SP tlog-witness: cosigns checkpoints of the logs it knows only if each
is consistent with the last one it cosigned (see docs/LEDGER.md, "Witnesses").

* :mod:`auraseal.witness.protocol` — the ``add-checkpoint`` request body (pure).
* :mod:`auraseal.witness.server` — :class:`Witness` (SQLite state) and its HTTP app.
* :mod:`auraseal.witness.client` — submit a checkpoint, collect cosignatures.
"""

from __future__ import annotations

from auraseal.witness.protocol import AddCheckpoint, build_add_checkpoint, parse_add_checkpoint

__all__ = ["AddCheckpoint", "build_add_checkpoint", "parse_add_checkpoint"]
