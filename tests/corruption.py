"""Builders for broken shards: one defect per rule, each at a known (file, record)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import numpy as np

from pipeline.data import format as fmt
from pipeline.data.example_proto import example_class
from pipeline.data.scan import EDGE
from pipeline.data.tfrecord import encode_frame, iter_frames


def frames(path: Path) -> list[bytes]:
    return [f.data for f in iter_frames(path)]


def write_frames(path: Path, datas: list[bytes]) -> None:
    path.write_bytes(b"".join(encode_frame(d) for d in datas))


def edit(data: bytes, change: Callable) -> bytes:
    """Apply `change(feature_map)` to a serialized Example and serialize it again."""
    example = example_class().FromString(data)
    change(example.features.feature)
    return example.SerializeToString()


def set_int(key: str, *values: int) -> Callable:
    def change(fmap):
        fmap[key].Clear()
        fmap[key].int64_list.value.extend(values)

    return change


def set_bytes(key: str, *values: bytes) -> Callable:
    def change(fmap):
        fmap[key].Clear()
        fmap[key].bytes_list.value.extend(values)

    return change


def set_floats(key: str, *values: float) -> Callable:
    def change(fmap):
        fmap[key].Clear()
        fmap[key].float_list.value.extend(values)

    return change


def delete(key: str) -> Callable:
    def change(fmap):
        del fmap[key]

    return change


def png_bytes(h: int = 20, w: int = 30) -> bytes:
    """A real PNG (which tf.io.decode_jpeg also decodes): only the magic bytes tell it apart."""
    import tensorflow as tf

    pixels = np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return tf.io.encode_png(pixels).numpy()


def broken_jpeg_body(jpeg: bytes) -> bytes:
    """Headers intact, entropy-coded data cut short (no EOI): only a full decode notices."""
    sos = jpeg.index(b"\xff\xda")
    return jpeg[: sos + 40]


def segment(jpeg: bytes, markers: set[int]) -> int:
    """Where the first marker segment of one of `markers` starts (its 0xFF), walking the segments from SOI."""
    pos = 2
    while jpeg[pos + 1] not in markers:
        pos += 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
    return pos


SOFS = {0xC0, 0xC1, 0xC2}  # what TensorFlow's encoder writes
SOS, EOI = 0xDA, b"\xff\xd9"


def with_frame(jpeg: bytes, *, height: int | None = None, width: int | None = None, precision: int | None = None,
               marker: int | None = None) -> bytes:  # fmt: skip
    """The JPEG with its start-of-frame segment's fields changed: only a header reader or a decoder notices."""
    out, at = bytearray(jpeg), segment(jpeg, SOFS)
    for value, where, size in ((marker, 1, 1), (precision, 4, 1), (height, 5, 2), (width, 7, 2)):
        if value is not None:
            out[at + where : at + where + size] = value.to_bytes(size, "big")
    return bytes(out)


def after_scan_header(jpeg: bytes, tail: bytes) -> bytes:
    """The JPEG up to the end of its start-of-scan header, then `tail` instead of the scan data."""
    at = segment(jpeg, {SOS})
    return jpeg[: at + 2 + int.from_bytes(jpeg[at + 2 : at + 4], "big")] + tail


def without_scan(jpeg: bytes) -> bytes:
    """Tables and frame header, then the end of the image: no start-of-scan segment at all."""
    return jpeg[: segment(jpeg, {SOS})] + EOI


def flip_data_crc(frame: bytes) -> bytes:
    return frame[:-4] + bytes([frame[-4] ^ 0xFF]) + frame[-3:]


def encoded(data: bytes) -> bytes:
    fmap = example_class().FromString(data).features.feature
    return fmap[fmt.ENCODED].bytes_list.value[0]


def forge_collision(image: bytes, variant: int = 0) -> bytes:
    """A different image with the same length, CRC-32C, first and last EDGE bytes: the same content_hash.

    CRC-32C is linear, so after changing one byte in the middle, four chosen bytes next to it put the
    CRC back: solve the 32x32 system over GF(2) that maps their bits to the CRC. Each `variant`
    changes a different byte, so variants differ from one another too.
    """
    at = len(image) // 2 + 5 * variant
    assert len(image) <= 2 * EDGE or EDGE <= at < len(image) - EDGE - 5
    base = bytearray(image)
    base[at] ^= 0xFF
    base[at + 1 : at + 5] = bytes(4)
    c0 = google_crc32c.value(bytes(base))
    columns = []
    for bit in range(32):
        probe = bytearray(base)
        probe[at + 1 + bit // 8] ^= 1 << (bit % 8)
        columns.append(google_crc32c.value(bytes(probe)) ^ c0)
    basis: list[tuple[int, int]] = []  # (vector, which columns make it), distinct top bits, largest first
    for i, column in enumerate(columns):
        combo = 1 << i
        for vector, made_of in basis:
            if column ^ vector < column:
                column, combo = column ^ vector, combo ^ made_of
        if column:
            basis = sorted([*basis, (column, combo)], reverse=True)
    want, choice = google_crc32c.value(image) ^ c0, 0
    for vector, made_of in basis:
        if want ^ vector < want:
            want, choice = want ^ vector, choice ^ made_of
    assert want == 0
    base[at + 1 : at + 5] = choice.to_bytes(4, "little")
    return bytes(base)


# --- the corpus: the sample with one defect per rule -----------------------------------------------

VAL0 = "validation-00000-of-00002"
VAL1 = "validation-00001-of-00002"
TRAIN0 = "train-00000-of-00004"
TRAIN1 = "train-00001-of-00004"

# record index in VAL0 -> (the rule it must trip, how to break it)
RECORD_DEFECTS = {
    1: ("labels.range", lambda d, t: edit(d, set_int(fmt.LABEL, 0))),
    2: ("labels.synset", lambda d, t: edit(d, set_bytes(fmt.SYNSET, b"n01443537"))),
    3: ("labels.box_label", lambda d, t: edit(d, with_box_label(7))),
    4: ("image.size_mismatch", lambda d, t: edit(d, set_int(fmt.HEIGHT, 999))),
    5: ("image.not_jpeg", lambda d, t: edit(d, set_bytes(fmt.ENCODED, png_bytes()))),
    6: ("boxes.range", lambda d, t: edit(d, one_box(0.2, 0.1, 1.5, 0.9))),
    7: ("boxes.length", lambda d, t: edit(d, set_floats(fmt.BBOX_XMIN, 0.1, 0.2))),
    8: ("schema.missing_key", lambda d, t: edit(d, delete(fmt.TEXT))),
    9: ("schema.type", lambda d, t: edit(d, set_bytes(fmt.LABEL, b"1"))),
    10: ("schema.arity", lambda d, t: edit(d, set_int(fmt.WIDTH, 64, 64))),
    11: ("schema.constant", lambda d, t: edit(d, set_bytes(fmt.COLORSPACE, b"CMYK"))),
    12: ("schema.parse", lambda d, t: b"\xff" * 40),
    13: ("image.decode", lambda d, t: edit(d, set_bytes(fmt.ENCODED, broken_jpeg_body(encoded(d))))),
    14: ("duplicates.cross_split", lambda d, t: edit(d, set_bytes(fmt.ENCODED, encoded(t)))),
    15: ("boxes.range", lambda d, t: edit(d, one_box(0.5, 0.1, 0.5, 0.9))),  # zero width
}


def _image(change: Callable[[bytes], bytes]) -> Callable:
    return lambda d, t: edit(d, set_bytes(fmt.ENCODED, change(encoded(d))))


# What a JPEG header shows TensorFlow cannot decode, which header mode rejects (also record indices in VAL0).
HEADER_DEFECTS = {
    21: ("image.dimensions", _image(lambda j: with_frame(j, height=0, width=0))),  # DNL, which TensorFlow refuses
    22: ("image.dimensions", _image(lambda j: with_frame(j, width=65501))),  # libjpeg's limit is 65500
    23: ("image.dimensions", _image(lambda j: with_frame(j, height=65535, width=65535))),
    24: ("image.dimensions", _image(lambda j: with_frame(j, height=20000, width=10000))),  # 600 MB decoded: too large
    25: ("image.encoding", _image(lambda j: with_frame(j, precision=12))),
    26: ("image.encoding", _image(lambda j: with_frame(j, marker=0xC3))),  # lossless
    27: ("image.scan", _image(lambda j: after_scan_header(j, EOI))),
    28: ("image.scan", _image(lambda j: after_scan_header(j, b""))),
    29: ("image.scan", _image(without_scan)),
}
RECORD_DEFECTS.update(HEADER_DEFECTS)


def one_box(xmin, ymin, xmax, ymax):
    def change(fmap):
        for key, value in zip(
            (fmt.BBOX_XMIN, fmt.BBOX_YMIN, fmt.BBOX_XMAX, fmt.BBOX_YMAX), (xmin, ymin, xmax, ymax), strict=True
        ):
            set_floats(key, value)(fmap)
        label = fmap[fmt.LABEL].int64_list.value[0]
        set_int(fmt.BBOX_LABEL, label)(fmap)

    return change


def with_box_label(wrong):
    def change(fmap):
        one_box(0.1, 0.1, 0.9, 0.9)(fmap)
        set_int(fmt.BBOX_LABEL, wrong)(fmap)

    return change


def build_corpus(sample_dir: Path, out: Path) -> Path:
    """The sample copied to `out` with one defect per rule, each at a known place."""
    shutil.copytree(sample_dir, out)
    train_first = frames(out / TRAIN0)[0]
    datas = frames(out / VAL0)
    for index, (_, breaker) in RECORD_DEFECTS.items():
        datas[index] = breaker(datas[index], train_first)
    datas[17] = edit(datas[17], set_bytes(fmt.ENCODED, encoded(datas[16])))  # a within-split repeat
    framed = [encode_frame(d) for d in datas]
    framed[20] = flip_data_crc(framed[20])
    (out / VAL0).write_bytes(b"".join(framed))

    # VAL1: cut in the middle of its last frame. TRAIN1: the length CRC of record 5 broken.
    data = (out / VAL1).read_bytes()
    (out / VAL1).write_bytes(data[:-10])
    raw = bytearray((out / TRAIN1).read_bytes())
    offset = sum(len(encode_frame(d)) for d in frames(out / TRAIN1)[:5])
    raw[offset + 8] ^= 0x01
    (out / TRAIN1).write_bytes(bytes(raw))

    # The directory: a stray file, a missing shard, an empty one.
    (out / "notes.txt").write_text("not a shard")
    (out / "train-00002-of-00004").unlink()
    (out / "train-00003-of-00004").write_bytes(b"")
    return out
