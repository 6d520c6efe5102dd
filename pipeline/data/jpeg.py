"""JPEG headers read from the bytes, without decoding: fast enough to check every ImageNet record.

Real ImageNet holds baseline, progressive, grayscale and EXIF/ICC JPEGs; all of them are valid.
"""

from __future__ import annotations

from dataclasses import dataclass

SOI = b"\xff\xd8"
_SOS = 0xDA
# Start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# Markers that stand alone, with no length field.
_STANDALONE = frozenset(range(0xD0, 0xDA)) | {0x01}


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


def read_jpeg_header(data: bytes) -> JpegHeader:
    """Walk the marker segments up to the first start-of-frame and read its dimensions."""
    if data[:2] != SOI:
        raise JpegError("no SOI marker (not a JPEG)")
    exif = icc = False
    pos = 2
    while True:
        # Markers may be preceded by any number of 0xFF fill bytes.
        if pos >= len(data):
            raise JpegError("truncated before a start-of-frame segment")
        if data[pos] != 0xFF:
            raise JpegError(f"no marker at byte {pos}")
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1
        if pos >= len(data):
            raise JpegError("truncated before a start-of-frame segment")
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if pos + 2 > len(data):
            raise JpegError(f"truncated in the length of marker 0x{marker:02X}")
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > len(data):
            raise JpegError(f"segment 0x{marker:02X} at byte {pos - 2} runs past the end")
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
            return JpegHeader(height, width, body[5], marker in _PROGRESSIVE, exif, icc)
        elif marker == _SOS:
            raise JpegError("scan data before any start-of-frame segment")
        pos += length


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
