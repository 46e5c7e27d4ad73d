"""The witness: verifies and cosigns checkpoints (C2SP tlog-witness, tlog-cosignature).

State is one SQLite table ``logs(origin, size, root, note)``: the latest
checkpoint cosigned per log.  A request is checked and the state updated in
one ``BEGIN IMMEDIATE`` transaction, and the cosignature is returned only
after the commit — so a witness never cosigns two different trees of one
log, even with concurrent requests or after a crash.

Responses (``POST /add-checkpoint``):

* 200 — the cosignature line(s) ``— <witness> base64(keyid || u64 time || sig)``;
* 400 — malformed body or checkpoint, or old size above the checkpoint size;
* 403 — unknown log (origin), or no valid signature by the log's key;
* 409 — old size is not the size the witness knows (body: that size,
  ``text/x.tlog.size``), or the same size with another root (a fork);
* 422 — the consistency proof does not verify.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from auraseal import merkle
from auraseal.errors import (
    AuraSealError,
    MalformedNoteError,
    MerkleProofError,
    StorageError,
    TrustError,
)
from auraseal.ledger.checkpoint import Checkpoint
from auraseal.ledger.note import CosignatureSigner, NoteVerifier, open_note, signature_line
from auraseal.witness.protocol import MAX_BODY, SIZE_TYPE, parse_add_checkpoint

__all__ = ["Outcome", "Witness", "witness_app"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class Outcome:
    """An HTTP answer: status, content type, body."""

    status: int
    content_type: str
    body: bytes

    @classmethod
    def text(cls, status: int, message: str) -> Outcome:
        return cls(status, "text/plain; charset=utf-8", (message + "\n").encode())


class Witness:
    """Cosigns checkpoints of ``logs`` (origin → the log's note verifier)."""

    def __init__(self, state: Path, signer: CosignatureSigner,
                 logs: Mapping[str, NoteVerifier],
                 clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self.logs = dict(logs)
        self.clock = clock
        self.path = Path(state)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open witness state: {exc}", str(self.path)) from exc

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    def known(self, origin: str) -> tuple[int, bytes] | None:
        row = self._db.execute("SELECT size, root FROM logs WHERE origin = ?",
                               (origin,)).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add_checkpoint(self, body: bytes) -> Outcome:
        """Handle one ``add-checkpoint`` request body."""
        try:
            req = parse_add_checkpoint(body)
            text = req.note.decode("utf-8")
            origin = text.split("\n", 1)[0]
        except (MalformedNoteError, UnicodeDecodeError) as exc:
            return Outcome.text(400, f"bad request: {exc}")
        verifier = self.logs.get(origin)
        if verifier is None:
            return Outcome.text(403, "unknown log")
        try:
            note, _ = open_note(req.note, [verifier], "checkpoint")
            cp = Checkpoint.parse_body(note.text, "checkpoint")
        except MalformedNoteError as exc:
            return Outcome.text(400, f"bad checkpoint: {exc}")
        except TrustError:
            return Outcome.text(403, "no valid signature by the log's key")
        if req.old_size > cp.size:
            return Outcome.text(400, "old size is larger than the checkpoint size")
        try:
            with self._tx() as db:
                row = db.execute("SELECT size, root FROM logs WHERE origin = ?",
                                 (origin,)).fetchone()
                size, root = (int(row[0]), bytes(row[1])) if row else (0, b"")
                if req.old_size != size:
                    return Outcome(409, SIZE_TYPE, f"{size}\n".encode())
                if cp.size == size and size > 0:
                    if req.proof:
                        return Outcome.text(422, "proof must be empty for equal sizes")
                    if cp.root != root:
                        return Outcome.text(409, "checkpoint has the known size but another"
                                                 " root: the log forked")
                elif size == 0:
                    if req.proof:
                        return Outcome.text(422, "proof must be empty from size 0")
                else:
                    try:
                        merkle.verify_consistency(size, cp.size, req.proof, root, cp.root)
                    except MerkleProofError as exc:
                        return Outcome.text(422, f"consistency proof fails: {exc.what}")
                db.execute(
                    "INSERT INTO logs (origin, size, root, note) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (origin) DO UPDATE SET size = excluded.size,"
                    " root = excluded.root, note = excluded.note",
                    (origin, cp.size, cp.root, req.note))
                sig = self.signer.sign(note.text, int(self.clock()))
        except sqlite3.Error as exc:
            return Outcome.text(500, f"witness state: {exc}")
        line = signature_line(self.signer.name, self.signer.key_id, sig)
        return Outcome(200, "text/plain; charset=utf-8", line.encode("utf-8"))


def witness_app(witness: Witness) -> Starlette:
    """``POST /add-checkpoint`` over :class:`Witness`."""

    async def add_checkpoint(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return PlainTextResponse("request body too large\n", status_code=413)
        try:
            out = await anyio.to_thread.run_sync(witness.add_checkpoint, bytes(body))
        except AuraSealError as exc:  # pragma: no cover - add_checkpoint answers everything
            return PlainTextResponse(f"{exc}\n", status_code=500)
        # set verbatim: Starlette would append "; charset=utf-8" to text/x.tlog.size
        return Response(out.body, status_code=out.status,
                        headers={"content-type": out.content_type})

    return Starlette(routes=[Route("/add-checkpoint", add_checkpoint, methods=["POST"])])
