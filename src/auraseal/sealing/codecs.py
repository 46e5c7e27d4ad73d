"""Codecs for a component's stream (``docs/FORMAT.md`` §6).

* ``none``: the bytes as they are.
* ``huffman``: raw deflate with zlib's ``Z_HUFFMAN_ONLY`` strategy — each
  block is a length-limited (15-bit) canonical Huffman code over literals.
* ``zstd``: one Zstandard frame at level 1 (multi-threaded for big inputs).

Decompression is streamed and bounded: output beyond the expected size,
trailing bytes or a truncated stream raise
:class:`~auraseal.errors.IntegrityError`, never anything else.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

import zstandard

from auraseal.errors import IntegrityError, UsageError

__all__ = [
    "CODEC_NAMES",
    "FEED",
    "ZSTD_LEVEL",
    "ZstdStream",
    "compress",
    "compress_into",
    "compress_stream",
    "iter_decompress",
    "looks_incompressible",
    "sample_compresses",
    "sample_spans",
]

CODEC_NAMES = ("none", "huffman", "zstd")
ZSTD_LEVEL = 1
_OUT_CHUNK = 1 << 20
_MT_THRESHOLD = 8 << 20
_SAMPLE = 256 << 10
#: Slice size in which big inputs are fed to zstd (fixed: it shapes the output).
FEED = 8 << 20
_ZSTD_SLICE = 16 << 10


def _check(codec: str) -> None:
    if codec not in CODEC_NAMES:
        raise UsageError(f"unknown codec {codec!r} (use {', '.join(CODEC_NAMES)})", "codec")


def _huffman() -> zlib._Compress:
    return zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_HUFFMAN_ONLY)


def _zstd(size: int) -> zstandard.ZstdCompressor:
    threads = (os.cpu_count() or 1) if size >= _MT_THRESHOLD else 0
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=threads, write_content_size=True)


def compress(codec: str, data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
    """Compress ``data`` in memory (``none`` returns it unchanged)."""
    _check(codec)
    if codec == "none":
        return data
    if codec == "huffman":
        c = _huffman()
        return c.compress(data) + c.flush()
    if len(data) >= _MT_THRESHOLD:
        z = ZstdStream(len(data))
        view = memoryview(data).cast("B")
        for off in range(0, len(view), FEED):
            z.feed(view[off : off + FEED])
        return z.finish()
    return _zstd(len(data)).compress(data)


class ZstdStream:
    """Multi-threaded zstd fed in :data:`FEED`-byte slices.

    :func:`compress` uses this same path for big inputs, so a stream made
    while a file is being read equals ``compress("zstd", file_bytes)``.
    """

    def __init__(self, size: int, out: BinaryIO | None = None) -> None:
        self._mem: io.BytesIO | None = None
        sink: BinaryIO
        if out is None:
            sink = self._mem = io.BytesIO()
        else:
            sink = out
        self._w = _zstd(size).stream_writer(sink, size=size, closefd=False)

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        self._w.write(chunk)

    def finish(self) -> bytes:
        """End the frame; the stream (``b""`` when it went to ``out``)."""
        self._w.flush(zstandard.FLUSH_FRAME)
        return self._mem.getvalue() if self._mem is not None else b""


#: Inputs below this are compressed in memory by :func:`compress_into`.
_INTO_MIN = _MT_THRESHOLD


def compress_into(
    codec: str,
    read: Callable[[int, int], bytes | bytearray | memoryview],
    size: int,
    dst: BinaryIO,
) -> None:
    """Write to ``dst`` exactly what ``compress(codec, data)`` returns, where
    ``data`` is the ``size`` bytes given by ``read(offset, length)``. Inputs
    of at least 8 MiB (and any ``none`` or ``huffman`` input) are read and
    compressed in :data:`FEED` slices (the slices :func:`compress` feeds
    zstd), so memory stays bounded whatever the size."""
    _check(codec)
    if codec == "zstd" and size < _INTO_MIN:
        dst.write(compress(codec, read(0, size)))
        return
    huff = _huffman() if codec == "huffman" else None
    zs = ZstdStream(size, dst) if codec == "zstd" else None
    for off in range(0, size, FEED):
        chunk = read(off, min(FEED, size - off))
        if zs is not None:
            zs.feed(chunk)
        else:
            dst.write(chunk if huff is None else huff.compress(chunk))
    if zs is not None:
        zs.finish()
    elif huff is not None:
        dst.write(huff.flush())


def sample_compresses(sample: bytes | bytearray | memoryview) -> bool:
    """True if ``sample`` shrinks by at least 3% with zstd level 1."""
    return len(zstandard.ZstdCompressor(level=1).compress(sample)) < len(sample) * 0.97


def looks_incompressible(data: bytes | bytearray | memoryview) -> bool:
    """True if three 256 KiB samples (start, middle, end) do not shrink with zstd.

    Used to store random-looking components with codec ``none`` without
    spending a full compression pass on them.
    """
    spans = sample_spans(len(data))
    return bool(spans) and not any(
        sample_compresses(data[off : off + _SAMPLE]) for off in spans
    )


def sample_spans(n: int) -> tuple[int, ...]:
    """Offsets of the 256 KiB samples :func:`looks_incompressible` takes from
    ``n`` bytes (none below 1 MiB: such inputs are always compressed)."""
    if n < 4 * _SAMPLE:
        return ()
    return (0, n // 2 - _SAMPLE // 2, n - _SAMPLE)


def compress_stream(codec: str, src: BinaryIO, dst: BinaryIO, size: int) -> int:
    """Compress ``src`` (``size`` bytes) into ``dst``; returns bytes written."""
    _check(codec)
    if codec == "none":
        raise UsageError("compress_stream needs a real codec", "codec")
    written = 0
    if codec == "huffman":
        c = _huffman()
        while chunk := src.read(_OUT_CHUNK * 8):
            out = c.compress(chunk)
            dst.write(out)
            written += len(out)
        out = c.flush()
        dst.write(out)
        return written + len(out)
    _read, w = _zstd(size).copy_stream(src, dst, size=size, read_size=_OUT_CHUNK * 8)
    return int(w)


def iter_decompress(
    codec: str, chunks: Iterable[bytes | bytearray | memoryview], size: int, where: str = ""
) -> Iterator[bytes | bytearray | memoryview]:
    """Decompress a stream given as chunks, yielding output chunks.

    Raises :class:`IntegrityError` if the output is not exactly ``size``
    bytes, the stream is truncated, or bytes follow its end.
    """
    _check(codec)
    total = 0

    def account(out: bytes | bytearray | memoryview) -> None:
        nonlocal total
        total += len(out)
        if total > size:
            raise IntegrityError(f"stream decompresses to more than {size} bytes", where)

    if codec == "none":
        for c in chunks:
            account(c)
            yield c
    elif codec == "huffman":
        d = zlib.decompressobj(-15)
        try:
            for c in chunks:
                if d.eof:
                    if len(c):
                        raise IntegrityError("bytes after the end of the deflate stream", where)
                    continue
                data: bytes | bytearray | memoryview = c
                while len(data) and not d.eof:
                    out = d.decompress(data, _OUT_CHUNK)
                    account(out)
                    if out:
                        yield out
                    data = d.unconsumed_tail
                if d.unused_data:
                    raise IntegrityError("bytes after the end of the deflate stream", where)
            while not d.eof:
                out = d.decompress(d.unconsumed_tail, _OUT_CHUNK)
                if not out:
                    break
                account(out)
                yield out
        except zlib.error as exc:
            raise IntegrityError(f"corrupt deflate stream: {exc}", where) from exc
        if not d.eof:
            raise IntegrityError("truncated deflate stream", where)
    else:
        # Input is fed in small slices so one call's output stays bounded
        # (a zstd RLE block expands at most ~32768:1).
        z = zstandard.ZstdDecompressor().decompressobj()
        pending: list[bytes] = []
        held = 0
        try:
            for c in chunks:
                view = memoryview(c).cast("B")
                for off in range(0, len(view), _ZSTD_SLICE):
                    if z.eof:
                        raise IntegrityError("bytes after the end of the zstd frame", where)
                    out = z.decompress(view[off : off + _ZSTD_SLICE])
                    account(out)
                    if out:
                        pending.append(out)
                        held += len(out)
                        if held >= _OUT_CHUNK:
                            yield b"".join(pending)
                            pending, held = [], 0
                    if z.eof and z.unused_data:
                        raise IntegrityError("bytes after the end of the zstd frame", where)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"corrupt zstd stream: {exc}", where) from exc
        if not z.eof:
            raise IntegrityError("truncated zstd stream", where)
        if pending:
            yield b"".join(pending)
    if total != size:
        raise IntegrityError(f"stream decompresses to {total} bytes, expected {size}", where)
