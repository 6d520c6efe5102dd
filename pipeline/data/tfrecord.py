"""TFRecord framing, read and checked in our own code: offsets, lengths and both masked CRC-32Cs.

A TFRecord file is a sequence of `uint64 length | uint32 masked_crc(length) | data | uint32
masked_crc(data)`, little-endian. `tf.data.TFRecordDataset` stops at the first bad frame with an
error that names neither the file nor the record; here each frame is read with its offset, so a
validator can say exactly where a shard went wrong, and a DALI index can be written from the same
pass. The CRC runs in C (google-crc32c, hardware CRC32 where the CPU has it). This reader is the
reference for the framing rules and their messages; the validator's hot loop is the native scanner
in `_scan.c`, which defers to it for every frame that fails a check.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import google_crc32c

HEADER = 12  # uint64 length + uint32 masked CRC of it
FOOTER = 4  # uint32 masked CRC of the data
_MASK_DELTA = 0xA282EAD8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC-32C (rotate right by 15, add a constant), as TensorFlow writes it."""
    crc = google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


FramingProblem = Literal["length_crc", "data_crc", "truncated"]


class FramingError(ValueError):
    """A frame that cannot be trusted, and which of the three framing checks it failed."""

    def __init__(self, message: str, kind: FramingProblem, index: int, offset: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.index = index
        self.offset = offset

    @property
    def fatal(self) -> bool:
        """Only a bad data CRC leaves the length trustworthy; after anything else the next frame is lost."""
        return self.kind != "data_crc"


@dataclass(frozen=True)
class Frame:
    index: int  # 0-based record index in the file
    offset: int  # byte offset of the frame (its length field)
    size: int  # whole frame in bytes, header and footer included (DALI's index counts this)
    data: bytes | None  # None when the data CRC failed
    error: FramingError | None = None


def iter_frames(path: str | Path, *, start: int = 0, index: int = 0, buffer_size: int = 1 << 20) -> Iterator[Frame]:
    """Every frame of a TFRecord file, with its data CRC checked.

    A bad data CRC yields a Frame with `error` and reading goes on (the length was verified, so the
    next frame is still found). A bad length CRC or a truncated frame yields a fatal error frame and
    stops: nothing after it can be located. `start` and `index` resume at a known frame boundary:
    the native scanner hands the frames it will not judge itself over to this reader there.
    """
    path = Path(path)
    file_size = os.path.getsize(path)
    with open(path, "rb", buffering=buffer_size) as f:
        f.seek(start)
        offset = start
        while offset < file_size:
            header = f.read(HEADER)
            if len(header) < HEADER:
                yield _fatal(f"truncated frame header ({len(header)} of {HEADER} bytes)", "truncated", index, offset)
                return
            (length,) = _U64.unpack_from(header)
            (length_crc,) = _U32.unpack_from(header, 8)
            if masked_crc32c(header[:8]) != length_crc:
                yield _fatal("length CRC mismatch (corrupt frame header)", "length_crc", index, offset)
                return
            size = HEADER + length + FOOTER
            if offset + size > file_size:
                yield _fatal(
                    f"truncated record: frame of {size} bytes at offset {offset} runs past the end of the "
                    f"{file_size}-byte file",
                    "truncated",
                    index,
                    offset,
                )
                return
            data = f.read(length)
            (data_crc,) = _U32.unpack(f.read(FOOTER))
            if masked_crc32c(data) != data_crc:
                error = FramingError("data CRC mismatch (corrupt record bytes)", "data_crc", index, offset)
                yield Frame(index, offset, size, None, error)
            else:
                yield Frame(index, offset, size, data)
            index += 1
            offset += size


def _fatal(message: str, kind: FramingProblem, index: int, offset: int) -> Frame:
    return Frame(index, offset, 0, None, FramingError(message, kind, index, offset))


def encode_frame(data: bytes) -> bytes:
    """One TFRecord frame around `data`: what tf.io.TFRecordWriter writes (used by tests and benchmarks)."""
    length = _U64.pack(len(data))
    return length + _U32.pack(masked_crc32c(length)) + data + _U32.pack(masked_crc32c(data))
