"""The tf.data input: shapes, labels and normalisation, rank sharding, eval geometry, box-guided crops.

Record identity is checked by `image/filename` (unique in the sample) and, for evaluation, by a
checksum of the preprocessed image too, so "every record exactly once" is tested on records, not on
counts.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline.contracts.names import SAMPLE_MANIFEST
from pipeline.data.format import Box, ImageRecord, read_shard, write_shard
from pipeline.data.input import (
    count_records,
    eval_dataset,
    split_files,
    train_dataset,
)
from pipeline.data.preprocess import JPEG_DECODE, MEAN_RGB, STD_RGB

SIZE = 32
SYNSET = "n01440764"  # label 1


def _manifest(sample_dir: Path) -> dict:
    return json.loads((sample_dir / SAMPLE_MANIFEST).read_text())


def _jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    import tensorflow as tf

    return tf.io.encode_jpeg(pixels, quality=quality, format="").numpy()


def _record(pixels: np.ndarray, filename: str, boxes: tuple[Box, ...] = ()) -> ImageRecord:
    h, w = pixels.shape[:2]
    return ImageRecord(_jpeg(pixels), 1, SYNSET, "tench", h, w, filename, boxes)


def _unnormalize(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) * np.array(STD_RGB, np.float32) + np.array(MEAN_RGB, np.float32)


# --- files and counts ---------------------------------------------------------------------------


def test_split_files_lists_shards_in_order(sample_dir: Path) -> None:
    assert [p.name for p in split_files(sample_dir, "train")] == [f"train-0000{i}-of-00004" for i in range(4)]
    assert [p.name for p in split_files(str(sample_dir), "validation")] == [
        "validation-00000-of-00002",
        "validation-00001-of-00002",
    ]


def test_split_files_errors_name_the_directory_and_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"{tmp_path}: no train shards"):
        split_files(tmp_path, "train")
    with pytest.raises(ValueError, match="does not exist"):
        split_files(tmp_path / "nope", "validation")
    (tmp_path / "train-00000-of-00001").write_bytes(b"")
    with pytest.raises(ValueError, match="no validation shards"):
        split_files(tmp_path, "validation")
    with pytest.raises(ValueError, match="'val' is not one of train, validation"):
        split_files(tmp_path, "val")
    (tmp_path / "validation-00001-of-00003").write_bytes(b"")
    with pytest.raises(ValueError, match="incomplete: validation-00000-of-00003 and 1 more missing"):
        split_files(tmp_path, "validation")


def test_count_records_agrees_with_the_manifest(sample_dir: Path) -> None:
    splits = _manifest(sample_dir)["splits"]
    for split in ("train", "validation"):
        total = count_records(sample_dir, split)
        assert total == splits[split]["records"]
        for ranks in (2, 3, 4):
            assert sum(count_records(sample_dir, split, rank=r, num_ranks=ranks) for r in range(ranks)) == total


def test_the_split_identity_names_its_shards_and_records_wherever_they_are(sample_dir: Path, tmp_path: Path) -> None:
    import shutil
    import struct

    from pipeline.data.input import split_identity
    from pipeline.data.tfrecord import HEADER, encode_frame

    identity = split_identity(sample_dir, "validation")
    assert {k: identity[k] for k in ("split", "shards", "records")} == {"split": "validation", "shards": 2,
                                                                        "records": 500}
    assert identity["bytes"] == sum(p.stat().st_size for p in split_files(sample_dir, "validation"))
    copy = tmp_path / "copy"
    shutil.copytree(sample_dir, copy)
    assert split_identity(copy, "validation") == identity  # the same files elsewhere: the same data
    # Another record of the same size (a relabelled image, say): the same names and sizes, other data.
    shard = split_files(copy, "validation")[0]
    raw = bytearray(shard.read_bytes())
    (length,) = struct.unpack_from("<Q", raw)
    data = bytearray(raw[HEADER:HEADER + length])
    data[-1] ^= 0xFF
    raw[:HEADER + length + 4] = encode_frame(bytes(data))
    shard.write_bytes(bytes(raw))
    changed = split_identity(copy, "validation")
    assert changed["bytes"] == identity["bytes"] and changed["records"] == 500
    assert changed["sha256"] != identity["sha256"]


def test_count_records_refuses_a_file_that_is_not_a_tfrecord(tmp_path: Path) -> None:
    (tmp_path / "train-00000-of-00001").write_bytes(b"not a tfrecord at all, just some text")
    with pytest.raises(ValueError, match="train-00000-of-00001: length CRC mismatch"):
        count_records(tmp_path, "train")


def test_files_and_counts_do_not_import_tensorflow(sample_dir: Path) -> None:
    code = (
        "import sys\n"
        "from pipeline.data.input import count_records, split_files\n"
        f"assert len(split_files({str(sample_dir)!r}, 'train')) == 4\n"
        f"assert count_records({str(sample_dir)!r}, 'validation') == 500\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank": 2, "num_ranks": 2}, "rank 2 is not in 0..1"),
        ({"dtype": "float64"}, "dtype 'float64' is not one of"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
    ],
)
def test_bad_arguments_are_refused(sample_dir: Path, kwargs: dict, message: str) -> None:
    args = {"batch_size": 4, **kwargs}
    for make in (train_dataset, eval_dataset):
        with pytest.raises(ValueError, match=message):
            make(sample_dir, **args)


# --- training -----------------------------------------------------------------------------------


def test_train_batches_have_the_right_shape_labels_and_normalisation(sample_dir: Path) -> None:
    import tensorflow as tf

    ds = train_dataset(sample_dir, batch_size=32, image_size=SIZE, seed=3)
    assert ds.element_spec[0].shape == (32, SIZE, SIZE, 3)
    assert ds.element_spec[1].dtype == tf.int32
    batches = list(ds.take(6).as_numpy_iterator())
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert set(labels) <= {c["label"] - 1 for c in _manifest(sample_dir)["classes"]}
    assert np.isfinite(images).all()
    # The sample is darker than ImageNet, so "near 0 and about unit spread", loosely.
    assert np.abs(images.mean(axis=(0, 1, 2))).max() < 1.0
    assert 0.5 < images.std() < 2.0
    # Undone, the normalisation gives back pixels (resize can overshoot 0..255 only slightly).
    pixels = _unnormalize(images)
    assert pixels.min() > -1 and pixels.max() < 256


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_reduced_precision_images(sample_dir: Path, dtype: str) -> None:
    import tensorflow as tf

    for ds in (
        train_dataset(sample_dir, batch_size=8, image_size=SIZE, seed=1, dtype=dtype),
        eval_dataset(sample_dir, batch_size=8, image_size=SIZE, dtype=dtype),
    ):
        images, labels = next(iter(ds))
        assert images.dtype == tf.as_dtype(dtype) and images.shape == (8, SIZE, SIZE, 3)
        assert labels.dtype == tf.int32
        assert np.isfinite(images.numpy().astype(np.float32)).all()


def test_seeded_training_input_repeats_itself(sample_dir: Path) -> None:
    def first(seed: int) -> list:
        ds = train_dataset(sample_dir, batch_size=16, image_size=SIZE, seed=seed, with_filenames=True)
        return list(ds.take(2).as_numpy_iterator())

    a, b, c = first(11), first(11), first(12)
    for (xa, ya, fa), (xb, yb, fb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(fa, fb)
    assert not np.array_equal(a[0][2], c[0][2])


def _train_filenames(sample_dir: Path) -> set[bytes]:
    names = [r.filename.encode() for path in split_files(sample_dir, "train") for r in read_shard(path)]
    assert len(set(names)) == len(names), "sample filenames must be unique for this test to mean anything"
    return set(names)


@pytest.mark.parametrize("num_ranks", [2, 3])  # 4 train files: file-level for 2, record-level for 3
def test_train_ranks_see_disjoint_records_covering_the_split(sample_dir: Path, num_ranks: int) -> None:
    every = _train_filenames(sample_dir)
    batch = 64
    seen: list[set[bytes]] = []
    for rank in range(num_ranks):
        ds = train_dataset(
            sample_dir, batch_size=batch, image_size=SIZE, rank=rank, num_ranks=num_ranks, seed=0, with_filenames=True
        )
        # Somewhat more than one epoch of this rank's part.
        steps = -(-int(1.2 * len(every) / num_ranks) // batch)
        stream = [f for _, _, names in ds.take(steps).as_numpy_iterator() for f in names]
        part = set(stream)
        # Shuffle before repeat: the first epoch shows each of this rank's records once.
        assert len(set(stream[: len(part)])) == len(part)
        assert count_records(sample_dir, "train", rank=rank, num_ranks=num_ranks) == len(part)
        seen.append(part)
    for i in range(num_ranks):
        for j in range(i + 1, num_ranks):
            assert not seen[i] & seen[j], f"ranks {i} and {j} share records"
    assert set().union(*seen) == every


def test_cached_training_input(sample_dir: Path) -> None:
    ds = train_dataset(sample_dir, batch_size=64, image_size=SIZE, seed=2, cache=True, with_filenames=True)
    names = [f for _, _, batch in ds.take(20).as_numpy_iterator() for f in batch]
    # 1,280 draws from 1,010 records: the first epoch complete and the second under way from the cache.
    assert set(names[:1010]) == _train_filenames(sample_dir)
    assert len(set(names[1010:])) == len(names) - 1010


def _boxed_dir(tmp_path: Path, name: str, boxes: tuple[Box, ...]) -> Path:
    # Blue, with a red 20x20 square in the top-left corner: 4 % of the image.
    pixels = np.zeros((100, 100, 3), np.uint8)
    pixels[...] = (0, 0, 255)
    pixels[:20, :20] = (255, 0, 0)
    out = tmp_path / name
    out.mkdir()
    write_shard(out / "train-00000-of-00001", [_record(pixels, "red-square.JPEG", boxes)])
    return out


def test_random_resized_crops_keep_part_of_the_box(tmp_path: Path) -> None:
    def red_share(data_dir: Path) -> tuple[float, int]:
        ds = train_dataset(data_dir, batch_size=64, image_size=SIZE, seed=0)
        pixels = _unnormalize(np.concatenate([x for x, _ in ds.take(4).as_numpy_iterator()]))
        red = pixels[..., 0] > pixels[..., 2] + 50
        return float(red.any(axis=(1, 2)).mean()), len(np.unique(red.mean(axis=(1, 2))))

    boxed, boxed_variety = red_share(_boxed_dir(tmp_path, "boxed", (Box(0.0, 0.0, 0.2, 0.2),)))
    unboxed, _ = red_share(_boxed_dir(tmp_path, "unboxed", ()))
    # min_object_covered=0.1: every crop keeps at least 10 % of the red box. Without the box the crop
    # may fall anywhere, and most small ones miss the corner (about 45 % hit it with this seed).
    assert boxed >= 0.95
    assert unboxed <= 0.75
    assert boxed_variety > 20, "crops should differ from one another"


# --- evaluation ---------------------------------------------------------------------------------


def _eval_records(sample_dir: Path, **kwargs: int) -> list[tuple[bytes, int, str]]:
    ds = eval_dataset(sample_dir, batch_size=64, image_size=SIZE, with_filenames=True, **kwargs)
    out = []
    for images, labels, names in ds.as_numpy_iterator():
        for image, label, name in zip(images, labels, names, strict=True):
            out.append((bytes(name), int(label), hashlib.sha1(np.round(image, 3).tobytes()).hexdigest()))
    return out


def test_eval_visits_every_validation_record_exactly_once(sample_dir: Path) -> None:
    manifest = _manifest(sample_dir)["splits"]["validation"]
    # The sample's JPEG quirks are in this split, so decoding all of it covers them.
    assert all(manifest["quirks"][q] > 0 for q in ("grayscale", "progressive", "exif", "with_boxes"))
    records = _eval_records(sample_dir)
    assert len(records) == len({name for name, _, _ in records}) == manifest["records"]
    assert len(records) == count_records(sample_dir, "validation")
    per_label = Counter(label + 1 for _, label, _ in records)
    assert {str(k): v for k, v in per_label.items()} == manifest["per_label"]
    assert _eval_records(sample_dir) == records, "eval order must be deterministic"

    full = Counter(records)
    for num_ranks in (2, 3):  # 2 validation files: file-level for 2, record-level for 3
        parts = [_eval_records(sample_dir, rank=r, num_ranks=num_ranks) for r in range(num_ranks)]
        for rank, part in enumerate(parts):
            assert len(part) == count_records(sample_dir, "validation", rank=rank, num_ranks=num_ranks)
        assert sum((Counter(p) for p in parts), Counter()) == full


def test_eval_keeps_the_last_partial_batch(sample_dir: Path) -> None:
    sizes = [len(y) for _, y in eval_dataset(sample_dir, batch_size=64, image_size=SIZE).as_numpy_iterator()]
    assert sizes == [64] * 7 + [500 - 7 * 64]


# Eight 25-px vertical bands, each its own colour; the bottom half is darker.
BANDS = np.array(
    [
        (230, 30, 30),
        (30, 200, 40),
        (40, 60, 220),
        (230, 220, 40),
        (200, 40, 210),
        (40, 210, 210),
        (250, 140, 20),
        (120, 120, 120),
    ],
    dtype=np.float64,
)


def _banded(height: int, width: int) -> np.ndarray:
    """The pattern along the longer side, so portrait and landscape crop the same bands."""
    long, short = max(height, width), min(height, width)
    band = np.arange(long) * len(BANDS) // long
    half = np.arange(short) >= short // 2
    pixels = BANDS[band][None, :, :] * np.where(half, 0.5, 1.0)[:, None, None]
    pixels = np.rint(pixels).astype(np.uint8)
    return pixels if width >= height else pixels.transpose(1, 0, 2)


def _edge_distance(coords: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.abs(coords[:, None] - edges[None, :]).min(axis=1)


def test_eval_resizes_the_shorter_side_and_takes_the_centre(tmp_path: Path) -> None:
    import tensorflow as tf

    landscape, portrait = _banded(100, 200), _banded(200, 100)
    gray = np.rint(landscape.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)[..., None]
    records = [
        _record(landscape, "landscape.JPEG"),
        _record(portrait, "portrait.JPEG"),
        ImageRecord(_jpeg(gray), 1, SYNSET, "tench", 100, 200, "gray.JPEG"),
    ]
    write_shard(tmp_path / "validation-00000-of-00001", records)
    images, labels, names = next(
        eval_dataset(tmp_path, batch_size=8, image_size=SIZE, with_filenames=True).as_numpy_iterator()
    )
    assert list(names) == [b"landscape.JPEG", b"portrait.JPEG", b"gray.JPEG"]
    assert list(labels) == [0, 0, 0]
    got = _unnormalize(images)

    # Shorter side 100 -> round(32 * 256 / 224) = 37, longer 200 -> 74; centre 32: offsets 2 and 21.
    short, long, s0, l0 = 37, 74, 2, 21
    for out, record, (h, w) in zip(got, records, [(short, long), (long, short), (short, long)], strict=True):
        # NVIDIA's decode flags and TensorFlow 1's bilinear kernel (no half-pixel centres).
        decoded = tf.io.decode_jpeg(record.encoded, channels=3, **JPEG_DECODE)
        top, left = (s0, l0) if h == short else (l0, s0)
        resized = tf.compat.v1.image.resize_bilinear(decoded[None], (h, w), align_corners=False)[0]
        reference = resized.numpy()[top : top + SIZE, left : left + SIZE]
        np.testing.assert_allclose(out, reference, atol=0.02)

    # Independently of the resize kernel: where an output pixel's source point (TensorFlow 1's
    # mapping, out * in / out_size) lies well inside one band and one half, it has that band's colour.
    src_long = (np.arange(SIZE) + l0) * 200 / long
    src_short = (np.arange(SIZE) + s0) * 100 / short
    band = np.clip(np.floor((src_long + 0.5) / 25).astype(int), 0, 7)
    dark = src_short >= 49.5
    # 4 source pixels from an edge: NVIDIA's decode replicates chroma (no fancy upsampling), which moves
    # a colour edge by up to a pixel more than the smooth default.
    inside_long = _edge_distance(src_long, np.arange(1, 8) * 25 - 0.5) > 4
    inside_short = _edge_distance(src_short, np.array([49.5])) > 4
    expected = BANDS[band][None, :, :] * np.where(dark, 0.5, 1.0)[:, None, None]  # [short, long, 3]
    mask = inside_short[:, None] & inside_long[None, :]
    assert mask.sum() > 500
    assert set(band[inside_long]) == {2, 3, 4, 5}, "the centre crop shows the middle bands"
    # atol 16: NVIDIA's fast IDCT and replicated chroma leave a flat band up to 12-13 levels off its colour
    # near a chroma block's edge (the bands are 60+ apart, so a misplaced crop still fails).
    np.testing.assert_allclose(got[0][mask], expected[mask], atol=16)
    np.testing.assert_allclose(got[1].transpose(1, 0, 2)[mask], expected[mask], atol=16)
    # A grayscale JPEG decodes to three equal channels.
    np.testing.assert_allclose(got[2][..., 0], got[2][..., 1], atol=1e-3)
    np.testing.assert_allclose(got[2][..., 1], got[2][..., 2], atol=1e-3)
    luma = expected @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(got[2][..., 0][mask], luma[mask], atol=16)
