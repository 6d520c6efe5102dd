"""JPEG headers read from the bytes, without decoding: fast enough to check every ImageNet record.

Real ImageNet holds baseline, progressive, grayscale and EXIF/ICC JPEGs; all of them are valid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

SOI = b"\xff\xd8"
_SOS = 0xDA
_EOI = 0xD9
# Start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# Markers that stand alone, with no length field.
_STANDALONE = frozenset(range(0xD0, 0xDA)) | {0x01}

# What TensorFlow's decoder (libjpeg-turbo, 8-bit) takes, as far as a header shows it. Anything else
# fails `tf.io.decode_jpeg` and the training crop alike, so the validator rejects it without decoding.
DECODABLE_PROCESSES = frozenset({0xC0, 0xC1, 0xC2, 0xC9, 0xCA})  # baseline, extended, progressive (Huffman, arithmetic)
DECODABLE_PRECISION = 8
MAX_DIMENSION = 65500  # libjpeg's JPEG_MAX_DIMENSION; 0 means "in a DNL segment", which TensorFlow refuses too
MAX_DECODED_BYTES = 1 << 29  # TensorFlow refuses an image of height x width x channels bytes at or above this


class JpegError(ValueError):
    """The bytes are not a JPEG we can read the frame header of."""


@dataclass(frozen=True)
class JpegHeader:
    height: int
    width: int
    components: int
    progressive: bool
    exif: bool
    icc: bool
    process: int  # the start-of-frame marker
    precision: int  # bits per sample
    missing_scan: str | None  # why no scan data follows the frame header; None when some does


def _segments(data: bytes, pos: int) -> Iterator[tuple[int, int, int]]:
    """(marker, offset of its length field, length) of each marker segment from `pos` to the end of
    the bytes (length 0 for a standalone marker); JpegError where the structure breaks."""
    while pos < len(data):
        # Markers may be preceded by any number of 0xFF fill bytes.
        if data[pos] != 0xFF:
            raise JpegError(f"no marker at byte {pos}")
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1
        if pos >= len(data):
            return
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            yield marker, pos, 0
            continue
        if pos + 2 > len(data):
            raise JpegError(f"truncated in the length of marker 0x{marker:02X}")
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > len(data):
            raise JpegError(f"segment 0x{marker:02X} at byte {pos - 2} runs past the end")
        yield marker, pos, length
        pos += length


def read_jpeg_header(data: bytes) -> JpegHeader:
    """Walk the marker segments to the first start-of-frame and read it, then on to the first
    start-of-scan, to see that scan data follows (no decoding: fast enough for every ImageNet record)."""
    if data[:2] != SOI:
        raise JpegError("no SOI marker (not a JPEG)")
    exif = icc = False
    for marker, pos, length in _segments(data, 2):
        body = data[pos + 2 : pos + length]
        if marker == 0xE1 and body.startswith(b"Exif\x00"):
            exif = True
        elif marker == 0xE2 and body.startswith(b"ICC_PROFILE\x00"):
            icc = True
        elif marker in _SOF_MARKERS:
            if len(body) < 6:
                raise JpegError("start-of-frame segment too short")
            height = int.from_bytes(body[1:3], "big")
            width = int.from_bytes(body[3:5], "big")
            missing = _missing_scan(data, pos + length)
            return JpegHeader(height, width, body[5], marker in _PROGRESSIVE, exif, icc, marker, body[0], missing)
        elif marker == _SOS:
            raise JpegError("scan data before any start-of-frame segment")
    raise JpegError("truncated before a start-of-frame segment")


def _missing_scan(data: bytes, pos: int) -> str | None:
    """Why no scan data follows the frame header that ends at `pos`; None when some does."""
    try:
        for marker, at, length in _segments(data, pos):
            if marker == _EOI:
                return "end of image before any start-of-scan segment"
            if marker == _SOS:
                end = at + length  # the first byte of entropy-coded data
                if end >= len(data):
                    return "nothing after the start-of-scan header"
                # In scan data 0xFF is followed by 0x00 (a stuffed byte); anything else is a marker.
                if data[end] == 0xFF and (end + 1 >= len(data) or data[end + 1] != 0x00):
                    return "a marker right after the start-of-scan header, no scan data"
                return None
    except JpegError as exc:
        return str(exc)
    return "truncated before a start-of-scan segment"


# A minimal big-endian EXIF block with one IFD entry: Orientation = 1 (as stored, no rotation).
_EXIF_PAYLOAD = (
    b"Exif\x00\x00"
    + b"MM\x00\x2a\x00\x00\x00\x08"
    + b"\x00\x01"
    + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x01\x00\x00"
    + b"\x00\x00\x00\x00"
)


def add_exif(jpeg: bytes) -> bytes:
    """Insert an APP1 EXIF segment after SOI and any APP0 (JFIF), where cameras put it."""
    if jpeg[:2] != SOI:
        raise JpegError("no SOI marker (not a JPEG)")
    pos = 2
    if jpeg[2:4] == b"\xff\xe0":
        pos = 4 + int.from_bytes(jpeg[4:6], "big")
    segment = b"\xff\xe1" + (len(_EXIF_PAYLOAD) + 2).to_bytes(2, "big") + _EXIF_PAYLOAD
    return jpeg[:pos] + segment + jpeg[pos:]
