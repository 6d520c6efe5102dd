"""A shifted copy of a dataset: some classes' images recoloured, every other record byte-for-byte the same.

What a month of new data can look like to a model that is already good (a camera, a season, a supplier
changed), made on purpose so that a warm start can be measured against training from scratch
(bench/warm_start.py). The shift rotates the colour channels, RGB -> GBR: every hue turns by a third of
a turn while brightness, saturation, pattern and size stay; the generated sample tells its classes apart
by hue and pattern, so a recoloured class looks like another class's colour in its own pattern.
Labels, record counts, shard names, file names and boxes are kept; grayscale JPEGs have no hue and are
copied as they are, and a recoloured JPEG keeps its progressive scan and EXIF segment, so the sample's
quirks (and its manifest's counts of them) still hold.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from collections.abc import Collection
from pathlib import Path

from pipeline.contracts.names import SAMPLE_MANIFEST
from pipeline.data.format import read_shard, write_shard
from pipeline.data.jpeg import add_exif, read_jpeg_header
from pipeline.data.sample import SampleSpec, encode_jpeg
from pipeline.data.shards import SPLITS, parse_shard_name

CHANNEL_ORDER = (1, 2, 0)  # RGB -> GBR: a hue rotation by 1/3 turn


def recolour_jpeg(jpeg: bytes, *, quality: int = SampleSpec.quality) -> bytes:
    """The same JPEG with its colour channels rotated; a grayscale (1-component) JPEG comes back unchanged."""
    import tensorflow as tf

    header = read_jpeg_header(jpeg)
    if header.components == 1:
        return jpeg
    pixels = tf.io.decode_jpeg(jpeg, channels=3).numpy()[..., list(CHANNEL_ORDER)]
    out = encode_jpeg(pixels, quality=quality, grayscale=False, progressive=header.progressive)
    return add_exif(out) if header.exif else out


def recolour_copy(src: str | Path, dst: str | Path, labels: Collection[int]) -> dict[str, int]:
    """Copy src's shards (and manifest) into the new directory dst with `labels`' images recoloured.

    Returns how many records were recoloured per split (not the grayscale ones). A label with no record
    in src is refused, so a typo cannot produce an unshifted "shifted" copy.
    """
    src, dst, wanted = Path(src), Path(dst), set(labels)
    shards = sorted(p for p in src.iterdir() if _is_shard(p.name)) if src.is_dir() else []
    if not shards:
        raise ValueError(f"{src}: no train-*/validation-* shards to copy")
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"{dst}: not empty; give a new directory for the shifted copy")
    dst.mkdir(parents=True, exist_ok=True)
    changed: Counter[str] = Counter()
    seen: set[int] = set()
    for path in shards:
        split = parse_shard_name(path.name).split
        records = []
        for record in read_shard(path):
            seen.add(record.label)
            if record.label in wanted and (encoded := recolour_jpeg(record.encoded)) != record.encoded:
                record = dataclasses.replace(record, encoded=encoded)
                changed[split] += 1
            records.append(record)
        write_shard(dst / path.name, records)
    if missing := sorted(wanted - seen):
        shutil.rmtree(dst)
        raise ValueError(f"{src}: no record has label {missing[0]}; labels present: {sorted(seen)}")
    if (src / SAMPLE_MANIFEST).is_file():
        shutil.copyfile(src / SAMPLE_MANIFEST, dst / SAMPLE_MANIFEST)
    return {split: changed[split] for split in SPLITS}


def _is_shard(name: str) -> bool:
    try:
        return parse_shard_name(name).split in SPLITS
    except ValueError:
        return False
