"""One exception hierarchy for every failure AuraSeal reports.

Every error carries *what* went wrong and *where* (a path, URL, field or
token), renders as a single line ``where: what``, and belongs to one of six
families whose ``exit_code`` the CLI uses unchanged:

====  =====================  ==========================================
code  family                 meaning
====  =====================  ==========================================
0     (none)                 success
1     :class:`IntegrityError`  bytes do not match their expected digest
2     :class:`InputError`      malformed input, hostile name, bad usage
3     :class:`TrustError`      signature, threshold, expiry, rollback
4     :class:`UnrecoverableError`  data lost beyond repair
5     :class:`IOFailure`       local I/O or network failure
====  =====================  ==========================================
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuraSealError",
    "BadSignatureError",
    "ChecksumError",
    "ComponentLostError",
    "ConfigError",
    "DestinationNotEmptyError",
    "DigestMismatchError",
    "EngineUnavailableError",
    "ExpiredError",
    "FreezeError",
    "IOFailure",
    "InputError",
    "IntegrityError",
    "LedgerConflictError",
    "LedgerError",
    "LedgerTamperError",
    "MalformedIntegrityError",
    "MalformedNoteError",
    "ManifestFormatError",
    "MerkleProofError",
    "MissingExtraError",
    "MissingSecretError",
    "NetworkError",
    "NoTrustAnchorError",
    "NotFoundError",
    "PackageMismatchError",
    "PartFormatError",
    "PinnedKeyError",
    "RollbackError",
    "StorageError",
    "ThresholdError",
    "TreeMismatchError",
    "TrustError",
    "UnknownKeyError",
    "UnrecoverableError",
    "UnsafePathError",
    "UnverifiableScriptError",
    "UnwitnessedError",
    "UsageError",
]


class AuraSealError(Exception):
    """Base class: ``what`` happened at ``where``."""

    exit_code: ClassVar[int] = 2

    def __init__(self, what: str, where: str = "") -> None:
        self.what = what
        self.where = where
        super().__init__(self.__str__())

    def __str__(self) -> str:
        what = " ".join(self.what.split())
        return f"{self.where}: {what}" if self.where else what


# --- 1: integrity -----------------------------------------------------------


class IntegrityError(AuraSealError):
    """Content does not match what it was sealed or signed as."""

    exit_code = 1


class DigestMismatchError(IntegrityError):
    """A digest computed over bytes differs from the expected one."""

    def __init__(self, what: str, where: str = "", expected: str = "", actual: str = "") -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(what, where)


class ChecksumError(IntegrityError):
    """A part file's own footer (SHA-256 / CRC32) does not match its contents."""


class TreeMismatchError(IntegrityError):
    """A directory tree differs from its manifest (see ``report``)."""

    def __init__(self, what: str, where: str = "", report: object = None) -> None:
        self.report = report
        super().__init__(what, where)


class LedgerTamperError(IntegrityError):
    """A ledger's stored history no longer recomputes (see ``block`` / ``entry``)."""

    def __init__(
        self, what: str, where: str = "", block: int | None = None, entry: str | None = None
    ) -> None:
        self.block = block
        self.entry = entry
        super().__init__(what, where)


class MerkleProofError(IntegrityError):
    """An inclusion or consistency proof does not verify."""


# --- 2: input ---------------------------------------------------------------


class InputError(AuraSealError):
    """Input that cannot be accepted as given."""

    exit_code = 2


class UsageError(InputError):
    """Command-line or API arguments that do not fit together."""


class ConfigError(InputError):
    """A configuration value is missing or invalid."""


class MissingExtraError(InputError):
    """A command needs an optional part (``auraseal[server]``, ``[postgres]``) not installed."""


class MissingSecretError(ConfigError):
    """A secret (such as ``INTEGRITY_HMAC_SECRET``) is required but not set."""


class MalformedIntegrityError(InputError):
    """An integrity string or one of its tokens cannot be parsed."""


class ManifestFormatError(InputError):
    """A manifest document is not valid JSON of the expected shape."""


class PartFormatError(InputError):
    """A part file's header or footer cannot be parsed."""


class UnsafePathError(InputError):
    """A name would escape its tree (``..``, absolute, backslash, NUL, symlink out)."""


class UnverifiableScriptError(InputError):
    """A page loads code in a way no integrity can be enforced for (SVG ``<script href>``)."""


class DestinationNotEmptyError(InputError):
    """The destination holds files that are not an AuraSeal install (``--force`` replaces it)."""


class NotFoundError(InputError):
    """A named thing (file, package, entry, block) does not exist."""


class LedgerError(InputError):
    """A ledger operation cannot be carried out as asked."""


class LedgerConflictError(LedgerError):
    """Concurrent writers raced for the same block; the caller may retry."""


class MalformedNoteError(InputError):
    """A C2SP signed note, checkpoint or note key is not well-formed."""


# --- 3: trust ---------------------------------------------------------------


class TrustError(AuraSealError):
    """Signed metadata cannot be trusted."""

    exit_code = 3


class BadSignatureError(TrustError):
    """A signature does not verify over the signed content."""


class UnknownKeyError(TrustError):
    """A signature is by a key that is not trusted."""


class ThresholdError(TrustError):
    """Fewer distinct trusted keys signed than the threshold requires."""


class ExpiredError(TrustError):
    """Signed metadata is past its expiry (freeze attack)."""


FreezeError = ExpiredError


class RollbackError(TrustError):
    """Signed metadata is older than (or conflicts with) what was trusted before."""


class PackageMismatchError(TrustError):
    """Signed metadata is for another package than the one asked for."""


class NoTrustAnchorError(TrustError):
    """Nothing to trust a manifest by: no trusted key, no pinned keys, no explicit opt-out."""


class PinnedKeyError(TrustError):
    """A manifest is not signed by the keys pinned for its package (trust on first use)."""


class UnwitnessedError(TrustError):
    """The publish of the version to install is not proven in a witnessed ledger
    (``auraseal fetch --require-witnessed-log``)."""


# --- 4: unrecoverable -------------------------------------------------------


class UnrecoverableError(AuraSealError):
    """Data is damaged beyond what its parity can rebuild."""

    exit_code = 4


class ComponentLostError(UnrecoverableError):
    """Fewer than ``k`` intact parts remain for a component."""

    def __init__(
        self, what: str, where: str = "", good: int = 0, total: int = 0, k: int = 0
    ) -> None:
        self.good = good
        self.total = total
        self.k = k
        super().__init__(what, where)


# --- 5: I/O -----------------------------------------------------------------


class IOFailure(AuraSealError):
    """The local filesystem or the network failed."""

    exit_code = 5


class StorageError(IOFailure):
    """Reading or writing local storage failed."""


class NetworkError(IOFailure):
    """A network request failed, timed out, stalled or sent too much."""


class EngineUnavailableError(IOFailure):
    """The erasure engine a package was sealed with cannot run on this machine."""
