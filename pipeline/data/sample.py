"""A small generated dataset in exactly the ImageNet TFRecord format, for CPU runs of the pipeline.

Each of 10 real ILSVRC classes is a hue and a pattern (stripes, checks, rings, a grid) drawn with
random period, phase, saturation, brightness and noise, so that ResNet50 v1.5 learns it from
scratch at 32x32 in a few hundred steps with the real training augmentation on (random resized crop
and flip): the hue survives any crop, the pattern survives a flip. Some objects sit in a box on a
grey cluttered background, with the box recorded, as real ImageNet's localisation boxes are.

The quirks a real ImageNet reader must survive are here on purpose: grayscale (1-component) JPEGs
that still say 3 channels, progressive JPEGs, and JPEGs with an EXIF segment.

The output is byte-for-byte deterministic, so `data.dvc` can pin it: pixels use only numpy's
integer and uniform generators and + - * / sqrt (IEEE-exact on every CPU, unlike SIMD sin/exp), and
the JPEG encoder is TensorFlow's libjpeg-turbo with its exact integer DCT.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.contracts.names import SAMPLE_MANIFEST
from pipeline.data.describe import SplitStats
from pipeline.data.format import Box, ImageRecord, write_shard
from pipeline.data.jpeg import add_exif
from pipeline.data.labels import load_label_map
from pipeline.data.shards import parse_shard_name, shard_name

FORMAT_NAME = "imagenet-tfrecord"
GENERATOR = "rn50 make-sample"
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SampleSpec:
    """What the sample contains. Changing any field changes the bytes, and so `data.dvc`."""

    # Ten real synsets, spread over the list (labels 1, 101, ..., 901).
    labels: tuple[int, ...] = (1, 101, 201, 301, 401, 501, 601, 701, 801, 901)
    train_per_class: tuple[int, int] = (90, 110)  # inclusive range, like ImageNet's uneven classes
    validation_per_class: int = 50  # as in ImageNet
    train_shards: int = 4
    validation_shards: int = 2
    min_side: int = 48
    max_side: int = 128
    seed: int = 20261128
    quality: int = 90
    # Every Nth record gets a quirk; the offsets keep them on different records.
    grayscale_every: int = 61
    progressive_every: int = 47
    exif_every: int = 53


SPLIT_IDS = {"train": 0, "validation": 1}


# --- pixels -------------------------------------------------------------------------------------


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """HSV (h in turns) to RGB 0..255, with only exact arithmetic."""
    h6 = (h % 1.0) * 6.0
    i = int(h6)
    f = h6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
    return np.array(rgb, dtype=np.float64) * 255.0


def _tri(u: np.ndarray) -> np.ndarray:
    """A triangle wave in 0..1 with period 1: stripes without sin()."""
    return np.abs(u - np.floor(u) - 0.5) * 2.0


def _sharpen(m: np.ndarray, gain: float) -> np.ndarray:
    return np.clip((m - 0.5) * gain + 0.5, 0.0, 1.0)


Pattern = Callable[[np.ndarray, np.ndarray, float], np.ndarray]

PATTERNS: dict[str, Pattern] = {
    "horizontal-stripes": lambda x, y, p: _tri(y / p),
    "vertical-stripes": lambda x, y, p: _tri(x / p),
    "checks": lambda x, y, p: np.abs(_tri(x / p) - _tri(y / p)),
    "rings": lambda x, y, p: _tri(np.sqrt(x * x + y * y) / p),
    "grid": lambda x, y, p: np.maximum(_tri(x / p), _tri(y / p)),
}
PATTERN_NAMES = tuple(PATTERNS)


@dataclass(frozen=True)
class ClassStyle:
    hue: float  # in turns
    pattern: str
    period: tuple[float, float]  # stripe period range, as a fraction of the object's shorter side


def class_style(k: int, num_classes: int) -> ClassStyle:
    """Class k: its own hue, and one of five patterns at a fine or a coarse period."""
    coarse = (k // len(PATTERN_NAMES)) % 2 == 1
    return ClassStyle(
        hue=k / num_classes,
        pattern=PATTERN_NAMES[k % len(PATTERN_NAMES)],
        period=(0.28, 0.45) if coarse else (0.12, 0.22),
    )


def _object_pixels(rng: np.random.Generator, style: ClassStyle, h: int, w: int) -> np.ndarray:
    side = min(h, w)
    period = side * (style.period[0] + (style.period[1] - style.period[0]) * rng.random())
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    # Rings are centred somewhere inside the object; the others get a random phase.
    x = x - w * (0.3 + 0.4 * rng.random())
    y = y - h * (0.3 + 0.4 * rng.random())
    m = _sharpen(PATTERNS[style.pattern](x, y, period), gain=1.5 + 2.0 * rng.random())
    hue = style.hue + (rng.random() - 0.5) * 0.04
    fg = _hsv_to_rgb(hue, 0.6 + 0.35 * rng.random(), 0.75 + 0.25 * rng.random())
    bg = _hsv_to_rgb(hue, 0.5 + 0.4 * rng.random(), 0.15 + 0.3 * rng.random())
    return bg + (fg - bg) * m[..., None]


def _clutter(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A low-saturation blocky background, so a boxed object is not the only thing in the image."""
    block = int(rng.integers(6, 17))
    gh, gw = -(-h // block), -(-w // block)
    grey = rng.integers(60, 190, size=(gh, gw, 1)).astype(np.float64)
    tint = rng.integers(-12, 13, size=(gh, gw, 3)).astype(np.float64)
    blocks = grey + tint
    return np.repeat(np.repeat(blocks, block, axis=0), block, axis=1)[:h, :w]


def _random_boxes(rng: np.random.Generator, h: int, w: int) -> list[tuple[int, int, int, int]]:
    """0, 1 or 2 boxes (pixel x0, y0, x1, y1), each covering a large part of the image."""
    draw = rng.random()
    count = 0 if draw < 0.6 else 1 if draw < 0.9 else 2
    boxes = []
    for _ in range(count):
        bw = int(w * (0.5 + 0.45 * rng.random()))
        bh = int(h * (0.5 + 0.45 * rng.random()))
        x0 = int(rng.integers(0, w - bw + 1))
        y0 = int(rng.integers(0, h - bh + 1))
        boxes.append((x0, y0, x0 + bw, y0 + bh))
    return boxes


def render_image(
    rng: np.random.Generator, style: ClassStyle, h: int, w: int
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """An HxWx3 uint8 image of one class, and the pixel boxes of its objects (may be empty)."""
    boxes = _random_boxes(rng, h, w)
    if boxes:
        img = _clutter(rng, h, w)
        for x0, y0, x1, y1 in boxes:
            img[y0:y1, x0:x1] = _object_pixels(rng, style, y1 - y0, x1 - x0)
    else:
        img = _object_pixels(rng, style, h, w)
    noise = rng.integers(-20, 21, size=img.shape) + rng.integers(-20, 21, size=img.shape)
    return np.clip(np.rint(img + noise * 0.5), 0, 255).astype(np.uint8), boxes


# --- JPEG ---------------------------------------------------------------------------------------


def encode_jpeg(pixels: np.ndarray, *, quality: int, grayscale: bool, progressive: bool) -> bytes:
    import tensorflow as tf

    if grayscale:
        r, g, b = (pixels[..., i].astype(np.float64) for i in range(3))
        pixels = np.rint(0.299 * r + 0.587 * g + 0.114 * b).astype(np.uint8)[..., None]
    data = tf.io.encode_jpeg(pixels, quality=quality, progressive=progressive, format="")
    return data.numpy()


# --- dataset ------------------------------------------------------------------------------------


def _plan_counts(spec: SampleSpec, rng: np.random.Generator) -> dict[str, list[int]]:
    lo, hi = spec.train_per_class
    train = [int(n) for n in rng.integers(lo, hi + 1, size=len(spec.labels))]
    return {"train": train, "validation": [spec.validation_per_class] * len(spec.labels)}


def _make_records(spec: SampleSpec, split: str, counts: list[int]) -> list[ImageRecord]:
    labels = load_label_map()
    # (class index, n-th image of that class), then shuffled, as the converter shuffles.
    items = [(k, n) for k, count in enumerate(counts) for n in range(count)]
    order = np.random.default_rng([spec.seed, SPLIT_IDS[split], 0]).permutation(len(items))
    records = []
    for position, item in enumerate(order):
        k, n = items[item]
        label = spec.labels[k]
        synset = labels.synset(label)
        rng = np.random.default_rng([spec.seed, SPLIT_IDS[split], 1, int(item)])
        h, w = (int(v) for v in rng.integers(spec.min_side, spec.max_side + 1, size=2))
        pixels, boxes = render_image(rng, class_style(k, len(spec.labels)), h, w)
        jpeg = encode_jpeg(
            pixels,
            quality=spec.quality,
            grayscale=position % spec.grayscale_every == 3,
            progressive=position % spec.progressive_every == 5,
        )
        if position % spec.exif_every == 7:
            jpeg = add_exif(jpeg)
        filename = (
            f"{synset}_{n + 1}.JPEG" if split == "train" else f"ILSVRC2012_val_{position + 1:08d}.JPEG"
        )
        records.append(
            ImageRecord(
                encoded=jpeg,
                label=label,
                synset=synset,
                text=labels.name(label),
                height=h,
                width=w,
                filename=filename,
                boxes=tuple(Box(x0 / w, y0 / h, x1 / w, y1 / h) for x0, y0, x1, y1 in boxes),
            )
        )
    return records


def _shard_ranges(count: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal ranges, as the converter's np.linspace spacing gives."""
    edges = [count * i // shards for i in range(shards + 1)]
    return list(itertools.pairwise(edges))


def _is_ours(name: str) -> bool:
    if name == SAMPLE_MANIFEST:
        return True
    try:
        parse_shard_name(name)
    except ValueError:
        return False
    return True


def make_sample(out_dir: str | Path, spec: SampleSpec | None = None) -> dict:
    """Write the sample dataset and its manifest into `out_dir`; returns the manifest.

    An earlier sample there is replaced. Anything else in the directory is refused rather than
    deleted or left beside the shards, where it would change what `data.dvc` pins.
    """
    spec = spec or SampleSpec()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    foreign = sorted(p.name for p in out.iterdir() if not _is_ours(p.name))
    if foreign:
        raise FileExistsError(f"{out}: holds {foreign[0]!r}, which is not part of a sample; use an empty directory")

    # Build beside the target and move in at the end, so an interrupted run leaves the old
    # sample (or nothing), never a mix of shards from two runs.
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        manifest = _write_sample(Path(tmp), spec)
        for old in out.iterdir():
            old.unlink()
        for new in sorted(Path(tmp).iterdir(), key=lambda p: p.name == SAMPLE_MANIFEST):
            os.replace(new, out / new.name)
    return manifest


def _write_sample(out: Path, spec: SampleSpec) -> dict:
    label_map = load_label_map()
    counts = _plan_counts(spec, np.random.default_rng([spec.seed, 99]))
    shard_counts = {"train": spec.train_shards, "validation": spec.validation_shards}
    splits: dict[str, dict] = {}
    for split, per_class in counts.items():
        records = _make_records(spec, split, per_class)
        shards = shard_counts[split]
        for i, (lo, hi) in enumerate(_shard_ranges(len(records), shards)):
            write_shard(out / shard_name(split, i, shards), records[lo:hi])
        splits[split] = SplitStats(shards=shards).add_all(records).to_json()

    manifest = {
        "format": FORMAT_NAME,
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "seed": spec.seed,
        "image_side_px": [spec.min_side, spec.max_side],
        "classes": [
            {"label": label, "synset": label_map.synset(label), "text": label_map.name(label)}
            for label in spec.labels
        ],
        "splits": splits,
    }
    (out / SAMPLE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
