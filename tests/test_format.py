"""The ImageNet TFRecord format: writer -> file -> parser round trips, through tf.data too."""

import numpy as np
import pytest
import tensorflow as tf

from pipeline.data import format as fmt
from pipeline.data.format import Box, ImageRecord, decode_example, encode_example, parse_example, parse_examples
from pipeline.data.sample import encode_jpeg

# The keys build_imagenet_data.py writes, written out independently of the module under test.
IMAGENET_KEYS = {
    "image/encoded": ("bytes", "scalar"),
    "image/height": ("int64", "scalar"),
    "image/width": ("int64", "scalar"),
    "image/channels": ("int64", "scalar"),
    "image/colorspace": ("bytes", "scalar"),
    "image/format": ("bytes", "scalar"),
    "image/filename": ("bytes", "scalar"),
    "image/class/label": ("int64", "scalar"),
    "image/class/synset": ("bytes", "scalar"),
    "image/class/text": ("bytes", "scalar"),
    "image/object/bbox/xmin": ("float", "list"),
    "image/object/bbox/ymin": ("float", "list"),
    "image/object/bbox/xmax": ("float", "list"),
    "image/object/bbox/ymax": ("float", "list"),
    "image/object/bbox/label": ("int64", "list"),
}


def _jpeg(h: int, w: int, *, grayscale: bool = False, progressive: bool = False) -> bytes:
    pixels = np.random.default_rng(h * 1000 + w).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return encode_jpeg(pixels, quality=90, grayscale=grayscale, progressive=progressive)


def _records() -> list[ImageRecord]:
    return [
        ImageRecord(_jpeg(48, 64), 1, "n01440764", "tench, Tinca tinca", 48, 64, "n01440764_1.JPEG"),
        ImageRecord(
            _jpeg(80, 50, grayscale=True),
            1000,
            "n15075141",
            "toilet tissue, toilet paper, bathroom tissue",
            80,
            50,
            "n15075141_7.JPEG",
            boxes=(Box(0.125, 0.25, 0.75, 1.0),),
        ),
        ImageRecord(
            _jpeg(100, 120, progressive=True),
            282,
            "n02123045",
            "tabby, tabby cat",
            100,
            120,
            "ILSVRC2012_val_00000003.JPEG",
            boxes=(Box(0.0, 0.0, 0.5, 0.5), Box(0.375, 0.5, 1.0, 0.875)),
        ),
    ]


def test_feature_spec_is_the_imagenet_layout():
    assert {f.key: (f.dtype, f.arity) for f in fmt.FEATURES} == IMAGENET_KEYS
    assert set(fmt.feature_spec()) == set(IMAGENET_KEYS)


def test_writer_file_parser_round_trips_every_field(tmp_path):
    records = _records()
    path = tmp_path / "train-00000-of-00001"
    assert fmt.write_shard(path, records) == len(records)

    # Outside TensorFlow: the same records come back, field for field.
    assert list(fmt.read_shard(path)) == records

    # Inside tf.data, with the feature spec.
    parsed = list(tf.data.TFRecordDataset(str(path)).map(parse_example).as_numpy_iterator())
    assert len(parsed) == len(records)
    for rec, got in zip(records, parsed, strict=True):
        assert got["image/encoded"] == rec.encoded
        assert got["image/class/label"] == rec.label
        assert got["image/class/synset"] == rec.synset.encode()
        assert got["image/class/text"] == rec.text.encode()
        assert got["image/height"] == rec.height and got["image/width"] == rec.width
        assert got["image/channels"] == 3
        assert got["image/colorspace"] == b"RGB" and got["image/format"] == b"JPEG"
        assert got["image/filename"] == rec.filename.encode()
        for key, attr in [("xmin", "xmin"), ("ymin", "ymin"), ("xmax", "xmax"), ("ymax", "ymax")]:
            expected = np.array([getattr(b, attr) for b in rec.boxes], dtype=np.float32)
            np.testing.assert_array_equal(got[f"image/object/bbox/{key}"], expected)
        np.testing.assert_array_equal(got["image/object/bbox/label"], [rec.label] * len(rec.boxes))
        # Every record decodes to 3 channels, grayscale JPEGs included, as the format promises.
        image = tf.io.decode_jpeg(got["image/encoded"], channels=3)
        assert image.shape == (rec.height, rec.width, 3)


def test_batched_parser_agrees_with_single(tmp_path):
    records = _records()
    path = tmp_path / "validation-00000-of-00001"
    fmt.write_shard(path, records)
    batch = next(iter(tf.data.TFRecordDataset(str(path)).batch(len(records)).map(parse_examples)))
    np.testing.assert_array_equal(batch["image/class/label"], [r.label for r in records])
    # List features are padded to the longest in the batch.
    assert batch["image/object/bbox/xmax"].shape == (len(records), 2)
    np.testing.assert_array_equal(batch["image/object/bbox/xmax"][2], [0.5, 1.0])
    np.testing.assert_array_equal(batch["image/object/bbox/xmax"][0], [0.0, 0.0])


def test_serialization_is_deterministic():
    record = _records()[2]
    assert encode_example(record) == encode_example(record)
    assert decode_example(encode_example(record)) == record


def test_missing_required_key_is_an_error_not_a_default():
    example = tf.train.Example.FromString(encode_example(_records()[0]))
    del example.features.feature["image/class/label"]
    data = example.SerializeToString()
    with pytest.raises(ValueError, match="image/class/label"):
        decode_example(data)
    with pytest.raises(tf.errors.InvalidArgumentError):
        parse_example(tf.constant(data))


def test_ragged_box_lists_are_rejected():
    example = tf.train.Example.FromString(encode_example(_records()[1]))
    example.features.feature["image/object/bbox/ymax"].float_list.value.append(0.5)
    with pytest.raises(ValueError, match="different lengths"):
        decode_example(example.SerializeToString())
