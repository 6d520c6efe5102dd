"""The ImageNet TFRecord format: the single source of truth for keys, dtypes and arity.

This is the `tf.train.Example` layout that tensorflow/models `build_imagenet_data.py` writes and
NVIDIA's ResNet50 scripts read. The writer, the tf.data parser, the validator and the sample
generator all derive from `FEATURES`, so a key can never be spelled two ways.

TensorFlow is imported inside the functions that need it: the CLI and the DAG files import this
module for its constants, and must stay fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipeline.data.example_proto import parse_feature_map

if TYPE_CHECKING:
    import tensorflow as tf

Dtype = Literal["bytes", "int64", "float"]
Arity = Literal["scalar", "list"]


@dataclass(frozen=True)
class Feature:
    key: str
    dtype: Dtype
    arity: Arity


ENCODED = "image/encoded"
HEIGHT = "image/height"
WIDTH = "image/width"
CHANNELS = "image/channels"
COLORSPACE = "image/colorspace"
FORMAT = "image/format"
FILENAME = "image/filename"
LABEL = "image/class/label"
SYNSET = "image/class/synset"
TEXT = "image/class/text"
BBOX_XMIN = "image/object/bbox/xmin"
BBOX_YMIN = "image/object/bbox/ymin"
BBOX_XMAX = "image/object/bbox/xmax"
BBOX_YMAX = "image/object/bbox/ymax"
BBOX_LABEL = "image/object/bbox/label"

FEATURES: tuple[Feature, ...] = (
    Feature(ENCODED, "bytes", "scalar"),
    Feature(HEIGHT, "int64", "scalar"),
    Feature(WIDTH, "int64", "scalar"),
    Feature(CHANNELS, "int64", "scalar"),
    Feature(COLORSPACE, "bytes", "scalar"),
    Feature(FORMAT, "bytes", "scalar"),
    Feature(FILENAME, "bytes", "scalar"),
    Feature(LABEL, "int64", "scalar"),
    Feature(SYNSET, "bytes", "scalar"),
    Feature(TEXT, "bytes", "scalar"),
    Feature(BBOX_XMIN, "float", "list"),
    Feature(BBOX_YMIN, "float", "list"),
    Feature(BBOX_XMAX, "float", "list"),
    Feature(BBOX_YMAX, "float", "list"),
    Feature(BBOX_LABEL, "int64", "list"),
)
FEATURES_BY_KEY = {f.key: f for f in FEATURES}

# What the converter always writes: it keeps grayscale and progressive JPEG bytes as they are, but
# still records 3 channels, RGB and JPEG, so readers must decode with channels=3.
CHANNELS_VALUE = 3
COLORSPACE_VALUE = "RGB"
FORMAT_VALUE = "JPEG"


@dataclass(frozen=True)
class Box:
    """A bounding box in normalised coordinates (0..1), as the converter stores them."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass(frozen=True)
class ImageRecord:
    """One ImageNet example. `label` is 1-based (1..1000), as written by the converter."""

    encoded: bytes
    label: int
    synset: str
    text: str
    height: int
    width: int
    filename: str
    boxes: tuple[Box, ...] = ()
    channels: int = CHANNELS_VALUE
    colorspace: str = COLORSPACE_VALUE
    image_format: str = FORMAT_VALUE


def _values(record: ImageRecord) -> dict[str, list[Any]]:
    boxes = record.boxes
    return {
        ENCODED: [record.encoded],
        HEIGHT: [record.height],
        WIDTH: [record.width],
        CHANNELS: [record.channels],
        COLORSPACE: [record.colorspace.encode()],
        FORMAT: [record.image_format.encode()],
        FILENAME: [record.filename.encode()],
        LABEL: [record.label],
        SYNSET: [record.synset.encode()],
        TEXT: [record.text.encode()],
        BBOX_XMIN: [b.xmin for b in boxes],
        BBOX_YMIN: [b.ymin for b in boxes],
        BBOX_XMAX: [b.xmax for b in boxes],
        BBOX_YMAX: [b.ymax for b in boxes],
        # The converter gives every box the image's label.
        BBOX_LABEL: [record.label] * len(boxes),
    }


def encode_example(record: ImageRecord) -> bytes:
    """Serialize a record to `tf.train.Example` bytes, deterministically (sorted map keys)."""
    import tensorflow as tf

    lists = {
        "bytes": lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=v)),
        "int64": lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v)),
        "float": lambda v: tf.train.Feature(float_list=tf.train.FloatList(value=v)),
    }
    values = _values(record)
    feature = {f.key: lists[f.dtype](values[f.key]) for f in FEATURES}
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def feature_values(fmap: Any, key: str) -> Any:
    """The values of `key` in a parsed feature map, read as the format's dtype ([] when absent)."""
    return getattr(fmap[key], f"{FEATURES_BY_KEY[key].dtype}_list").value if key in fmap else []


def decode_example(data: bytes) -> ImageRecord:
    """Read `tf.train.Example` bytes back into a record, without TensorFlow."""
    fmap = parse_feature_map(data)
    missing = [f.key for f in FEATURES if f.arity == "scalar" and f.key not in fmap]
    if missing:
        raise ValueError(f"record has no {missing[0]!r}")

    def get(key: str) -> list[Any]:
        return list(feature_values(fmap, key))

    def one(key: str) -> Any:
        value = get(key)
        if len(value) != 1:
            raise ValueError(f"record has {len(value)} values for {key!r}, expected 1")
        return value[0]

    coords = [get(k) for k in (BBOX_XMIN, BBOX_YMIN, BBOX_XMAX, BBOX_YMAX)]
    if len({len(c) for c in coords}) > 1:
        raise ValueError("record has bounding-box coordinate lists of different lengths")
    return ImageRecord(
        encoded=one(ENCODED),
        label=one(LABEL),
        synset=one(SYNSET).decode(),
        text=one(TEXT).decode(),
        height=one(HEIGHT),
        width=one(WIDTH),
        filename=one(FILENAME).decode(),
        boxes=tuple(Box(*c) for c in zip(*coords, strict=True)),
        channels=one(CHANNELS),
        colorspace=one(COLORSPACE).decode(),
        image_format=one(FORMAT).decode(),
    )


def feature_spec() -> dict[str, Any]:
    """The `tf.io.parse_*example` spec. Scalars have no default: a missing key is an error."""
    import tensorflow as tf

    dtypes = {"bytes": tf.string, "int64": tf.int64, "float": tf.float32}
    return {
        f.key: tf.io.FixedLenFeature([], dtypes[f.dtype])
        if f.arity == "scalar"
        else tf.io.VarLenFeature(dtypes[f.dtype])
        for f in FEATURES
    }


def _densify(parsed: dict[str, Any]) -> dict[str, Any]:
    import tensorflow as tf

    return {k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v for k, v in parsed.items()}


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parse one serialized record inside tf.data; list features come back as dense 1-D tensors."""
    import tensorflow as tf

    return _densify(tf.io.parse_single_example(serialized, feature_spec()))


def parse_examples(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parse a batch of serialized records at once (faster than one by one after `batch`).

    List features come back dense, padded with 0 to the longest in the batch.
    """
    import tensorflow as tf

    return _densify(tf.io.parse_example(serialized, feature_spec()))


def write_shard(path: str | Path, records: Iterable[ImageRecord]) -> int:
    """Write records to one TFRecord file; returns how many were written."""
    import tensorflow as tf

    count = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(encode_example(record))
            count += 1
    return count


def read_shard(path: str | Path) -> Iterator[ImageRecord]:
    """Every record of one TFRecord file, decoded."""
    import tensorflow as tf

    for data in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        yield decode_example(data)
