"""Submitting checkpoints to tlog-witnesses and publishing their cosignatures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import httpx

from auraseal.errors import MalformedNoteError, NetworkError, TrustError
from auraseal.ledger.checkpoint import Checkpoint
from auraseal.ledger.note import parse_note
from auraseal.witness.protocol import SIZE_TYPE, build_add_checkpoint, parse_size_response

if TYPE_CHECKING:
    from auraseal.ledger.service import Ledger

__all__ = ["ProofSource", "add_checkpoint", "cosign", "ledger_cosigner"]

#: ``proof(old_size, new_size)`` returns the consistency proof between the two sizes.
ProofSource = Callable[[int, int], Sequence[bytes]]


class WitnessConflict(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def add_checkpoint(url: str, old_size: int, proof: Sequence[bytes], note: str,
                   *, timeout: float = 10.0) -> str:
    """POST one ``add-checkpoint``; return the witness's signature line(s).

    Raises :class:`WitnessConflict` on 409 with a known size,
    :class:`TrustError` on a refusal, :class:`NetworkError` on transport failure.
    """
    endpoint = url.rstrip("/") + "/add-checkpoint"
    try:
        r = httpx.post(endpoint, content=build_add_checkpoint(old_size, proof, note),
                       timeout=timeout)
    except httpx.HTTPError as exc:
        raise NetworkError(f"witness unreachable: {exc}", endpoint) from exc
    if r.status_code == 409 and r.headers.get("content-type", "").startswith(SIZE_TYPE):
        raise WitnessConflict(parse_size_response(r.content, endpoint))
    if r.status_code != 200:
        raise TrustError(f"witness refused the checkpoint ({r.status_code}):"
                         f" {r.text.strip()[:200]}", endpoint)
    lines = r.content.decode("utf-8", "replace")
    try:
        parse_note(note + lines, endpoint)  # well-formed signature lines only
    except MalformedNoteError as exc:
        raise TrustError(f"malformed cosignature: {exc.what}", endpoint) from exc
    return lines


def cosign(note: str, witness_urls: Sequence[str], proof: ProofSource,
           *, timeout: float = 10.0) -> str:
    """``note`` with the cosignature of every witness appended.

    Each witness is first asked with old size 0; when it answers 409 with the
    size it knows, the request is repeated once with a consistency proof from
    that size (``proof(known, size)``).
    """
    cp = Checkpoint.parse_body(parse_note(note).text)
    out = note
    for url in witness_urls:
        try:
            lines = add_checkpoint(url, 0, [], note, timeout=timeout)
        except WitnessConflict as c:
            if c.size > cp.size:
                raise TrustError(f"witness knows a larger tree ({c.size}) than {cp.size}",
                                 url) from None
            lines = add_checkpoint(url, c.size, list(proof(c.size, cp.size)) if c.size else [],
                                   note, timeout=timeout)
        out += lines
    return out


def ledger_cosigner(ledger: Ledger, witness_urls: Sequence[str]) -> Callable[[str], str]:
    """A cosigner for :class:`auraseal.ledger.tilelog.TileWriter` over ``ledger``'s proofs."""

    def proof(size1: int, size2: int) -> Sequence[bytes]:
        return ledger.consistency(size1, size2)[0]

    return lambda note: cosign(note, witness_urls, proof)
