"""Builders for broken shards: one defect per rule, each at a known (file, record)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.data import format as fmt
from pipeline.data.example_proto import example_class
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


def flip_data_crc(frame: bytes) -> bytes:
    return frame[:-4] + bytes([frame[-4] ^ 0xFF]) + frame[-3:]


def encoded(data: bytes) -> bytes:
    fmap = example_class().FromString(data).features.feature
    return fmap[fmt.ENCODED].bytes_list.value[0]

