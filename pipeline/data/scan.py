"""One shard, read once: the byte-level rules checked, and one row of facts per record.

This runs in worker processes, so it imports neither TensorFlow (except for `full` decoding) nor
Great Expectations, and returns only the facts (about 100 bytes a record) and the violations,
never the images. The rules a table expresses well (label ranges, column pairs, box ranges) are
left to the Great Expectations suite over the facts; the ones that need the bytes are here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from pipeline.data import format as fmt
from pipeline.data.example_proto import parse_feature_map
from pipeline.data.jpeg import JpegError, read_jpeg_header
from pipeline.data.labels import NUM_CLASSES, load_label_map
from pipeline.data.tfrecord import iter_frames
from pipeline.data.rules import Violation

FACT_COLUMNS = (
    "split", "shard", "index", "offset", "size", "label", "synset", "label_synset", "height", "width",
    "jpeg_height", "jpeg_width", "num_boxes", "box_xmin_min", "box_ymin_min", "box_xmax_max", "box_ymax_max",
    "box_w_min", "box_h_min", "content_hash",
)  # fmt: skip
_NAN = float("nan")
_INF = float("inf")
_CONSTANTS = {fmt.CHANNELS: fmt.CHANNELS_VALUE, fmt.COLORSPACE: b"RGB", fmt.FORMAT: b"JPEG"}
_BOX_KEYS = (fmt.BBOX_XMIN, fmt.BBOX_YMIN, fmt.BBOX_XMAX, fmt.BBOX_YMAX)


@dataclass
class ShardScan:
    shard: str
    split: str
    file_bytes: int = 0
    records: int = 0  # frames read, well-formed or not
    facts: dict[str, list] = field(default_factory=lambda: {c: [] for c in FACT_COLUMNS})
    violations: list[Violation] = field(default_factory=list)
    dali_index: list[tuple[int, int]] = field(default_factory=list)


def _schema_violations(fmap: Any) -> list[tuple[str, str]]:
    problems = []
    for feature in fmt.FEATURES:
        expected_kind = f"{feature.dtype}_list"
        if feature.key not in fmap:
            if feature.arity == "scalar":
                problems.append(("schema.missing_key", feature.key))
            continue
        kind = fmap[feature.key].WhichOneof("kind")
        if kind is None:  # an empty Feature: fine for a list, missing for a scalar
            if feature.arity == "scalar":
                problems.append(("schema.missing_key", feature.key))
            continue
        if kind != expected_kind:
            problems.append(("schema.type", f"{feature.key} is a {kind}, expected a {expected_kind}"))
            continue
        n = len(getattr(fmap[feature.key], kind).value)
        if feature.arity == "scalar" and n != 1:
            problems.append(("schema.arity", f"{feature.key} has {n} values, expected 1"))
    return problems


class _Decoder:
    """`full` mode: decode with channels=3 as training will; TensorFlow is imported on first use."""

    def __init__(self) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self._tf = tf

    def problem(self, encoded: bytes) -> str | None:
        try:
            shape = self._tf.io.decode_jpeg(encoded, channels=3).shape
        except self._tf.errors.OpError as exc:
            return exc.message.splitlines()[0] if exc.message else type(exc).__name__
        return None if shape[-1] == 3 else f"decoded to {shape[-1]} channels"


def scan_shard(path: str | Path, split: str, *, decode: str = "header", dali: bool = False) -> ShardScan:
    """Read every frame of one shard; return its facts, its violations and, if asked, its DALI index."""
    path = Path(path)
    scan = ShardScan(shard=path.name, split=split, file_bytes=path.stat().st_size)
    labels = load_label_map()
    decoder = _Decoder() if decode == "full" else None
    facts = scan.facts

    def violation(rule: str, index: int | None, detail: str) -> None:
        scan.violations.append(Violation(rule, path.name, index, detail))

    for frame in iter_frames(path):
        if frame.error is not None:
            violation(f"framing.{frame.error.kind}", frame.index, f"offset {frame.offset}: {frame.error}")
            if frame.error.fatal:
                break  # nothing after it can be located
        scan.records += 1
        if frame.error is not None:
            continue
        if dali:
            scan.dali_index.append((frame.offset, frame.size))
        try:
            fmap = parse_feature_map(frame.data)
        except ValueError as exc:
            violation("schema.parse", frame.index, str(exc))
            continue
        problems = _schema_violations(fmap)
        for rule, detail in problems:
            violation(rule, frame.index, detail)
        if problems:
            continue
        for key, expected in _CONSTANTS.items():
            value = fmt.feature_values(fmap, key)[0]
            if value != expected:
                violation("schema.constant", frame.index, f"{key} is {value!r}, expected {expected!r}")

        label = fmt.feature_values(fmap, fmt.LABEL)[0]
        encoded = fmt.feature_values(fmap, fmt.ENCODED)[0]
        coords = [list(fmt.feature_values(fmap, k)) for k in _BOX_KEYS]
        box_labels = list(fmt.feature_values(fmap, fmt.BBOX_LABEL))
        num_boxes = len(coords[0])
        if len({len(c) for c in coords}) > 1:
            violation("boxes.length", frame.index, "coordinate lists of lengths " + "/".join(str(len(c)) for c in coords))
            coords = [[] for _ in coords]
            num_boxes = 0
        if box_labels and box_labels != [label] * num_boxes:
            violation("labels.box_label", frame.index, f"box labels {box_labels[:4]} for label {label}")

        try:
            header = read_jpeg_header(encoded)
            jpeg_h, jpeg_w = float(header.height), float(header.width)
        except JpegError as exc:
            violation("image.not_jpeg", frame.index, str(exc))
            jpeg_h = jpeg_w = _NAN
        else:
            if decoder is not None and (problem := decoder.problem(encoded)):
                violation("image.decode", frame.index, problem)

        if any(v != v or v in (_INF, -_INF) for c in coords for v in c):
            violation("boxes.range", frame.index, "a box coordinate is not a finite number")
        xmin, ymin, xmax, ymax = coords
        facts["split"].append(split)
        facts["shard"].append(path.name)
        facts["index"].append(frame.index)
        facts["offset"].append(frame.offset)
        facts["size"].append(frame.size)
        facts["label"].append(label)
        facts["synset"].append(fmt.feature_values(fmap, fmt.SYNSET)[0].decode("utf-8", "replace"))
        facts["label_synset"].append(labels.synsets[label - 1] if 1 <= label <= NUM_CLASSES else "")
        facts["height"].append(fmt.feature_values(fmap, fmt.HEIGHT)[0])
        facts["width"].append(fmt.feature_values(fmap, fmt.WIDTH)[0])
        facts["jpeg_height"].append(jpeg_h)
        facts["jpeg_width"].append(jpeg_w)
        facts["num_boxes"].append(num_boxes)
        facts["box_xmin_min"].append(min(xmin, default=_NAN))
        facts["box_ymin_min"].append(min(ymin, default=_NAN))
        facts["box_xmax_max"].append(max(xmax, default=_NAN))
        facts["box_ymax_max"].append(max(ymax, default=_NAN))
        facts["box_w_min"].append(min((b - a for a, b in zip(xmin, xmax, strict=True)), default=_NAN))
        facts["box_h_min"].append(min((b - a for a, b in zip(ymin, ymax, strict=True)), default=_NAN))
        facts["content_hash"].append(xxhash.xxh3_64_intdigest(encoded))

    if scan.records == 0 and not scan.violations:
        violation("shards.empty", None, "no records")
    return scan
