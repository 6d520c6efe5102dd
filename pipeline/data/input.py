"""tf.data input for ResNet50 v1.5 over ImageNet TFRecords, following NVIDIA DeepLearningExamples.

Training: this rank's shards, shuffled files, a parallel interleave, a record shuffle, then a random
resized crop (scale 0.08-1, aspect 3/4-4/3, guided by the ImageNet boxes) fused into the JPEG decode so
only the crop's blocks are decoded, a horizontal flip, and ImageNet mean/std normalisation after the
batch, where it is one vectorised op. Evaluation: resize the shorter side to size x 256/224 and take the
centre crop, one pass, in a fixed order. The decode flags, the evaluation geometry and the normalisation
are NVIDIA's, defined once in `pipeline.data.preprocess`.

Horovod ranks must see different data. NVIDIA gives each rank every Nth file, which needs a file count
divisible by the rank count; otherwise (2 validation shards on 3 ranks) every rank reads every file in
the same order and keeps every Nth record, so each record still goes to exactly one rank.

Augmentation uses stateless random ops with a per-record seed from `tf.data.Dataset.random`, so that a
seeded, deterministic pipeline gives the same crops and flips no matter how tf.data schedules its
threads.

TensorFlow is imported inside the dataset functions: `split_files` and `count_records` run in the CLI
and the evaluator's bookkeeping, which must not pay TensorFlow's import time.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.data.describe import find_shards
from pipeline.data.format import (
    BBOX_XMAX,
    BBOX_XMIN,
    BBOX_YMAX,
    BBOX_YMIN,
    ENCODED,
    FILENAME,
    LABEL,
    feature_spec,
)
from pipeline.data.preprocess import (
    decode_and_crop_jpeg,
    decode_jpeg,
    eval_crop,
    normalize,
)
from pipeline.data.scan import op_error_line
from pipeline.data.shards import IMAGENET_SHARDS, SPLITS, parse_shard_name, shard_name
from pipeline.data.tfrecord import FOOTER, HEADER, iter_frames, masked_crc32c

if TYPE_CHECKING:
    import tensorflow as tf

# The Inception-style crop of NVIDIA's and tensorflow/models' ResNet recipes.
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
# A crop must keep at least this much of some box, so it rarely shows background only.
MIN_OBJECT_COVERED = 0.1
# After this many rejected proposals the whole image is used; failures are rare, so this is cheap.
CROP_ATTEMPTS = 100

DTYPES = ("float32", "float16", "bfloat16")

# NVIDIA's reader settings: 10 files open at once, 8 records from each in turn, large read buffers
# (sequential reads are what network file systems are fast at).
_CYCLE_LENGTH = 10
_BLOCK_LENGTH = 8
_READ_BUFFER = 8 << 20

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")

# The features each input parses: text and synset strings are never read in training.
_TRAIN_KEYS = (ENCODED, LABEL, FILENAME, BBOX_YMIN, BBOX_XMIN, BBOX_YMAX, BBOX_XMAX)
_EVAL_KEYS = (ENCODED, LABEL, FILENAME)


class UnreadableRecordError(ValueError):
    """A record the input pipeline cannot read, named by shard file and record index."""


# --- files and counts (no TensorFlow) -----------------------------------------------------------


def split_files(data_dir: str | Path, split: str) -> list[Path]:
    """The shard files of `split`, in index order.

    A missing shard would silently shrink the data the model trains or is scored on, so an incomplete
    or mixed set of shards is refused here, not only by the validator.
    """
    data_dir = Path(data_dir)
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    example = shard_name(split, 0, IMAGENET_SHARDS[split])
    if not data_dir.is_dir():
        raise ValueError(f"{data_dir}: no {split} shards: the directory does not exist")
    files = find_shards(data_dir).get(split, [])
    if not files:
        raise ValueError(f"{data_dir}: no {split} shards (files named like {example})")
    names = [parse_shard_name(p.name) for p in files]
    totals = sorted({n.total for n in names})
    if len(totals) > 1:
        raise ValueError(f"{data_dir}: {split} shards from different sets (of {', '.join(map(str, totals))})")
    missing = sorted(set(range(totals[0])) - {n.index for n in names})
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ValueError(f"{data_dir}: {split} is incomplete: {shard_name(split, missing[0], totals[0])}{more} missing")
    return files


def count_records(data_dir: str | Path, split: str, *, rank: int = 0, num_ranks: int = 1) -> int:
    """How many records `split` holds, or, with `rank`/`num_ranks`, how many that rank's eval pass yields.

    Walks the frame headers and seeks over the data, so it is bound by the number of records rather
    than by bytes; the length CRC is still checked, so a file that is not a TFRecord is an error, not
    a wrong count.
    """
    _check_rank(rank, num_ranks)
    files = split_files(data_dir, split)
    own, record_level = _rank_files(files, rank, num_ranks)
    if not record_level:
        return sum(_count_frames(p) for p in own)
    return len(range(rank, sum(_count_frames(p) for p in files), num_ranks))


def split_identity(data_dir: str | Path, split: str) -> dict[str, Any]:
    """What tells the records of `split` apart from any other set: its shards' names and sizes and each record's
    data CRC-32C as the shard stores it, in one sha256, with the counts. eval.json records it, so that the gate
    compares a candidate and a baseline only when both scored the same records.

    The same walk over the frame headers as count_records (a 4-byte read more per record), so it costs what
    counting does, not a read of every byte. The CRCs are TFRecord's own, which TensorFlow checks as it reads:
    any change to a record's bytes changes them (not a defence against a forged file, which could keep them).
    """
    files = split_files(data_dir, split)
    digest = hashlib.sha256()
    records = total = 0
    for path in files:
        crcs = b"".join(_frames(path))
        size = os.path.getsize(path)
        digest.update(f"{path.name}\t{size}\t{hashlib.sha256(crcs).hexdigest()}\n".encode())
        records, total = records + len(crcs) // FOOTER, total + size
    return {"split": split, "shards": len(files), "records": records, "bytes": total, "sha256": digest.hexdigest()}


def _count_frames(path: Path) -> int:
    return sum(1 for _ in _frames(path))


def _frames(path: Path) -> Iterator[bytes]:
    """Each record's stored data CRC (its 4-byte footer), walking the frame headers and seeking over the data."""
    size = os.path.getsize(path)
    count = offset = 0
    with open(path, "rb") as f:
        while offset < size:
            header = f.read(HEADER)
            if len(header) < HEADER:
                raise ValueError(f"{path}: truncated frame header at offset {offset}")
            (length,) = _U64.unpack_from(header)
            if masked_crc32c(header[:8]) != _U32.unpack_from(header, 8)[0]:
                raise ValueError(f"{path}: length CRC mismatch at offset {offset} (not a TFRecord file?)")
            offset += HEADER + length + FOOTER
            if offset > size:
                raise ValueError(f"{path}: truncated record {count} runs past the end of the file")
            f.seek(offset - FOOTER)
            yield f.read(FOOTER)  # and the file is at the next frame
            count += 1


def _rank_files(files: list[Path], rank: int, num_ranks: int) -> tuple[list[Path], bool]:
    """The files this rank reads, and whether it must then keep only every `num_ranks`-th record."""
    if len(files) % num_ranks == 0:
        return files[rank::num_ranks], False
    return files, True


def _check_rank(rank: int, num_ranks: int) -> None:
    if num_ranks < 1 or not 0 <= rank < num_ranks:
        raise ValueError(f"rank {rank} is not in 0..{num_ranks - 1} (num_ranks={num_ranks})")


def _check_args(batch_size: int, image_size: int, rank: int, num_ranks: int, dtype: str) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if image_size < 1:
        raise ValueError(f"image_size must be at least 1, got {image_size}")
    _check_rank(rank, num_ranks)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")


def _seeds(seed: int | None, rank: int) -> tuple[int | None, int | None, int | None]:
    """Independent file-shuffle, record-shuffle and augmentation seeds, different on every rank.

    With one seed for all ranks, rank r's i-th image would get the same crop as every other rank's.
    """
    if seed is None:
        return None, None, None
    a, b, c = (int(s) for s in np.random.SeedSequence([seed, rank]).generate_state(3))
    return a, b, c


# --- datasets -----------------------------------------------------------------------------------


def train_dataset(
    data_dir: str | Path,
    *,
    batch_size: int,
    image_size: int = 224,
    rank: int = 0,
    num_ranks: int = 1,
    seed: int | None = None,
    cache: bool = False,
    shuffle_buffer: int = 10_000,
    dtype: str = "float32",
    deterministic: bool | None = None,
    with_filenames: bool = False,
) -> tf.data.Dataset:
    """Endless augmented training batches `(images [B,S,S,3] dtype, labels [B] int32)` for one rank.

    `deterministic=None` means deterministic exactly when `seed` is given: out-of-order parallelism is
    faster, but a seeded run (a test, a reproduction) wants the same batches back. `cache` keeps the
    serialized records in memory, for data sets that fit (the sample). `with_filenames` adds a third
    element, the records' `image/filename`, to check what each rank saw.
    """
    import tensorflow as tf

    _check_args(batch_size, image_size, rank, num_ranks, dtype)
    if shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer must be at least 1, got {shuffle_buffer}")
    if deterministic is None:
        deterministic = seed is not None
    file_seed, record_seed, augment_seed = _seeds(seed, rank)
    files = split_files(data_dir, "train")
    own, record_level = _rank_files(files, rank, num_ranks)

    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in own])
    if record_level:
        # Every rank must read the same records in the same order for `shard` to split them.
        ds = _read(ds, deterministic=True).shard(num_ranks, rank)
    else:
        ds = _read(ds.shuffle(len(own), seed=file_seed), deterministic=deterministic)
    if cache:
        ds = ds.cache()
    # Shuffle before repeat, so that every epoch shows every record exactly once.
    ds = ds.shuffle(shuffle_buffer, seed=record_seed).repeat()
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=augment_seed).batch(2)))
    ds = ds.map(
        partial(_train_record, image_size=image_size, with_filenames=with_filenames),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return _finish(ds, dtype)


def eval_dataset(
    data_dir: str | Path,
    *,
    batch_size: int,
    image_size: int = 224,
    rank: int = 0,
    num_ranks: int = 1,
    dtype: str = "float32",
    with_filenames: bool = False,
) -> tf.data.Dataset:
    """One pass over this rank's part of the validation split, `(images [b,S,S,3], labels [b] int32)`.

    The last batch may be short, and ranks may get different numbers of batches: every record is
    scored exactly once over all ranks, and `count_records(..., rank=, num_ranks=)` says how many
    each rank should see. `with_filenames` adds the records' `image/filename` as a third element.
    """
    import tensorflow as tf

    _check_args(batch_size, image_size, rank, num_ranks, dtype)
    files = split_files(data_dir, "validation")
    own, record_level = _rank_files(files, rank, num_ranks)
    ds = _read(tf.data.Dataset.from_tensor_slices([str(p) for p in own]), deterministic=True)
    if record_level:
        ds = ds.shard(num_ranks, rank)
    ds = ds.map(
        partial(_eval_record, image_size=image_size, with_filenames=with_filenames),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.batch(batch_size, drop_remainder=False, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _finish(ds, dtype)


def read_batches(
    dataset: tf.data.Dataset, data_dir: str | Path, split: str, *, rank: int = 0, num_ranks: int = 1
) -> Iterator[tuple]:
    """The batches of `dataset`, this rank's `train_dataset` or `eval_dataset` over `data_dir`.

    TensorFlow ends a whole input pipeline on one record it cannot parse or decode, with an error
    that names neither file nor record, and in training possibly hours in (the first random crop that
    reaches a corrupt part of an image). Header-mode validation cannot see every such record: this
    turns that error into UnreadableRecordError naming the shard and record. Finding it reads this
    rank's shards again, parsing and decoding each record in turn until one fails, so a failure costs
    up to one more pass over them; the batches themselves pass straight through.
    """
    import tensorflow as tf

    batches = iter(dataset)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as exc:
            found = find_unreadable_record(data_dir, split, rank=rank, num_ranks=num_ranks)
            if found is None:
                found = f"{data_dir}: reading {split} failed ({op_error_line(exc)}), yet every record reads on its own"
            raise UnreadableRecordError(found) from None
        yield batch


def find_unreadable_record(data_dir: str | Path, split: str, *, rank: int = 0, num_ranks: int = 1) -> str | None:
    """'<shard> record <i>: <why>' for the first record of this rank's `split` shards that its input
    cannot read (the framing, the parse of the features it uses, the full decode); None if none."""
    import tensorflow as tf

    keys = _TRAIN_KEYS if split == "train" else _EVAL_KEYS
    own, _ = _rank_files(split_files(data_dir, split), rank, num_ranks)
    for path in own:
        for frame in iter_frames(path):
            if frame.error is not None:
                return f"{path} record {frame.index}: {frame.error}"
            try:  # eager: one record at a time, each error its own
                parsed = _parse(tf.constant(frame.data), keys)
                if BBOX_XMIN in keys:
                    _boxes(parsed)
                decode_jpeg(parsed[ENCODED])
            except tf.errors.OpError as exc:
                return f"{path} record {frame.index}: {op_error_line(exc)}"
    return None


def _read(files: tf.data.Dataset, *, deterministic: bool) -> tf.data.Dataset:
    import tensorflow as tf

    return files.interleave(
        lambda path: tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER),
        cycle_length=_CYCLE_LENGTH,
        block_length=_BLOCK_LENGTH,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )


def _finish(ds: tf.data.Dataset, dtype: str) -> tf.data.Dataset:
    """Normalise whole batches (one broadcast op instead of one per image), cast, prefetch."""
    import tensorflow as tf

    out_dtype = tf.as_dtype(dtype)

    def normalized(images: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
        # Cast after normalising: float16 cannot hold 0..255 minus the mean as precisely.
        return (tf.cast(normalize(images), out_dtype), *rest)

    ds = ds.map(normalized, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # NVIDIA's setting: parallelism comes from many elements at once, not threads inside one op.
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _parse(serialized: tf.Tensor, keys: tuple[str, ...]) -> dict[str, tf.Tensor]:
    """Parse only the features the input needs."""
    import tensorflow as tf

    spec = {key: value for key, value in feature_spec().items() if key in keys}
    parsed = tf.io.parse_single_example(serialized, spec)
    return {k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v for k, v in parsed.items()}


def _label(parsed: dict[str, tf.Tensor]) -> tf.Tensor:
    """Records hold 1..1000 (the synset's line in the sorted list); the model's classes are 0..999."""
    import tensorflow as tf

    return tf.cast(parsed[LABEL] - 1, tf.int32)


def _outputs(image: tf.Tensor, parsed: dict[str, tf.Tensor], with_filenames: bool) -> tuple[Any, ...]:
    label = _label(parsed)
    return (image, label, parsed[FILENAME]) if with_filenames else (image, label)


def _boxes(parsed: dict[str, tf.Tensor]) -> tf.Tensor:
    """[1, boxes, 4] in (ymin, xmin, ymax, xmax) order; no boxes means the whole image is the object."""
    import tensorflow as tf

    boxes = tf.stack([parsed[k] for k in (BBOX_YMIN, BBOX_XMIN, BBOX_YMAX, BBOX_XMAX)], axis=-1)
    return tf.clip_by_value(boxes, 0.0, 1.0)[None]


def _train_record(serialized: tf.Tensor, seed: tf.Tensor, *, image_size: int, with_filenames: bool) -> tuple:
    import tensorflow as tf

    parsed = _parse(serialized, _TRAIN_KEYS)
    encoded = parsed[ENCODED]
    boxes = _boxes(parsed)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.io.extract_jpeg_shape(encoded),
        bounding_boxes=boxes,
        seed=crop_seed,
        min_object_covered=MIN_OBJECT_COVERED,
        aspect_ratio_range=CROP_ASPECT_RATIO_RANGE,
        area_range=CROP_AREA_RANGE,
        max_attempts=CROP_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = decode_and_crop_jpeg(encoded, window)
    image = tf.image.resize(image, [image_size, image_size])
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return _outputs(image, parsed, with_filenames)


def _eval_record(serialized: tf.Tensor, *, image_size: int, with_filenames: bool) -> tuple:
    parsed = _parse(serialized, _EVAL_KEYS)
    image = eval_crop(decode_jpeg(parsed[ENCODED]), image_size)
    return _outputs(image, parsed, with_filenames)
