"""One shard, read once: the byte-level rules checked, and one row of facts per record.

This runs in worker processes, so it imports neither TensorFlow (except for `full` decoding) nor
Great Expectations, and returns only the facts (about 100 bytes a record) and the violations,
never the images. The rules a table expresses well (label ranges, column pairs, box ranges) are
left to the Great Expectations suite over the facts; the ones that need the bytes are here.

Two scanners, one answer. The native one (`_scan.c`) walks a buffer of frames in C: both CRCs, the
Example wire format, the JPEG header and the facts, in one pass over each byte, so header mode runs
near the speed of reading the file. Every frame it does not pass as clean goes to the Python one
(`iter_frames` and `_check_record`), which owns every rule and message. Python is the reference:
it scans alone where the extension is not built, and the tests hold the two to identical output.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np

from pipeline.data import format as fmt
from pipeline.data.example_proto import parse_feature_map
from pipeline.data.jpeg import (
    DECODABLE_PRECISION,
    DECODABLE_PROCESSES,
    MAX_DECODED_BYTES,
    MAX_DIMENSION,
    JpegError,
    JpegHeader,
    read_jpeg_header,
)
from pipeline.data.labels import NUM_CLASSES, load_label_map
from pipeline.data.rules import MAX_EXAMPLES, RuleResult, Violation
from pipeline.data.tfrecord import FOOTER, HEADER, Frame, iter_frames

# The facts table's columns and their dtypes, the same whichever scanner filled them.
FACT_DTYPES = {
    "split": object, "shard": object, "index": np.int64, "offset": np.int64, "size": np.int64, "label": np.int64,
    "synset": object, "label_synset": object, "height": np.int64, "width": np.int64, "jpeg_height": np.float64,
    "jpeg_width": np.float64, "num_boxes": np.int64, "box_xmin_min": np.float64, "box_ymin_min": np.float64,
    "box_xmax_max": np.float64, "box_ymax_max": np.float64, "box_w_min": np.float64, "box_h_min": np.float64,
    "content_hash": np.uint64,
}  # fmt: skip
FACT_COLUMNS = tuple(FACT_DTYPES)
_NAN = float("nan")
_INF = float("inf")
_CONSTANTS = {fmt.CHANNELS: fmt.CHANNELS_VALUE, fmt.COLORSPACE: b"RGB", fmt.FORMAT: b"JPEG"}
_BOX_KEYS = (fmt.BBOX_XMIN, fmt.BBOX_YMIN, fmt.BBOX_XMAX, fmt.BBOX_YMAX)
EDGE = 4096  # content_hash samples this many bytes at each end of an image
# The native scanner's read size: small enough that a chunk stays in the core's L2 cache from the
# kernel's copy to the CRC (measured: 0.5-1 MB beats 4 MB by a tenth); a larger frame grows the buffer.
_CHUNK = 1 << 20
# A shard of one tiny broken record repeated (a writer's bug, or an attack) is judged once per
# distinct record: results are remembered for records up to this size, this many of them.
_MEMO_BYTES, _MEMO_ENTRIES = 256, 4096


def content_hash(image: bytes) -> int:
    """The duplicate check's fingerprint of an image: CRC-32C of the bytes, high 32 bits; CRC-32C of
    the length and the first and last EDGE bytes, low 32.

    Equal images always share it; `check_duplicates` compares the bytes of every pair that does, so
    a cheap fingerprint is enough, and the native scanner gets the image CRC out of the record CRC
    instead of making a second pass over the image.
    """
    n = len(image)
    sample = image if n <= 2 * EDGE else image[:EDGE] + image[-EDGE:]
    return google_crc32c.value(image) << 32 | google_crc32c.value(n.to_bytes(8, "little") + sample)


def _load_native() -> tuple[Any, np.dtype | None, str | None]:
    """The C scanner, if it is built and agrees with format.py and jpeg.py on what it checks."""
    try:
        from pipeline.data import _scan
    except ImportError as exc:
        return None, None, f"the native shard scanner is not built ({exc})"
    record = np.dtype([(name, "<" + kind) for name, kind in (f.split(":") for f in _scan.RECORD_FIELDS)])
    features = tuple((f.key, f.dtype, f.arity) for f in fmt.FEATURES)
    constants = (_CONSTANTS[fmt.CHANNELS], _CONSTANTS[fmt.COLORSPACE], _CONSTANTS[fmt.FORMAT])
    jpeg = (DECODABLE_PRECISION, tuple(sorted(DECODABLE_PROCESSES)), MAX_DIMENSION, MAX_DECODED_BYTES)
    ours = (features, constants, EDGE, record.itemsize, jpeg)
    if ours != (_scan.FEATURES, _scan.CONSTANTS, _scan.EDGE, _scan.RECORD_SIZE, getattr(_scan, "JPEG_LIMITS", None)):
        return None, None, "the native shard scanner is out of date (rebuild: pip install -e .)"
    return _scan, record, None


_native, _RECORD, NATIVE_PROBLEM = _load_native()
NATIVE = _native is not None
_warned = False


@dataclass
class ShardScan:
    shard: str
    split: str
    file_bytes: int = 0
    records: int = 0  # frames read, well-formed or not
    facts: dict[str, np.ndarray] = field(default_factory=dict)  # FACT_COLUMNS, one row per well-formed record
    # Per broken rule, in the order first broken: every violation counted, the first MAX_EXAMPLES kept.
    # Never one object per violation: a shard of empty 16-byte records breaks ten rules in each.
    rules: dict[str, RuleResult] = field(default_factory=dict)
    dali_index: list[tuple[int, int]] = field(default_factory=list)

    @property
    def violations(self) -> list[Violation]:
        """The kept examples, rule by rule, each rule's in record order."""
        return [v for result in self.rules.values() for v in result.examples]


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
            return op_error_line(exc)
        return None if shape[-1] == 3 else f"decoded to {shape[-1]} channels"


def op_error_line(exc: Exception) -> str:
    """A TensorFlow op error as one short line: without the function-node prefix, the op suffix, or
    the record bytes some messages quote over several lines."""
    message = getattr(exc, "message", "") or type(exc).__name__
    message = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", message)
    message = re.sub(r"\s*\[Op:[^\]]*\].*$", "", message, flags=re.DOTALL)
    message = " ".join(message.split())
    return message if len(message) <= 200 else message[:197] + "..."


def _undecodable(header: JpegHeader) -> list[tuple[str, str]]:
    """What a JPEG header shows TensorFlow will not decode: the image rules header mode can check."""
    problems = []
    h, w = header.height, header.width
    if not (1 <= h <= MAX_DIMENSION and 1 <= w <= MAX_DIMENSION):
        problems.append(("image.dimensions", f"height {h}, width {w}: each must be 1-{MAX_DIMENSION}"))
    elif h * w * 3 >= MAX_DECODED_BYTES:
        detail = f"height {h}, width {w}: {h * w * 3:,} bytes decoded, over TensorFlow's {MAX_DECODED_BYTES:,}"
        problems.append(("image.dimensions", detail))
    if header.precision != DECODABLE_PRECISION or header.process not in DECODABLE_PROCESSES:
        problems.append(("image.encoding", f"{header.precision}-bit samples, start-of-frame 0x{header.process:02X}"))
    if header.missing_scan:
        problems.append(("image.scan", header.missing_scan))
    return problems


def _check_record(data: bytes, decoder: _Decoder | None) -> tuple[list[tuple[str, str]], tuple | None]:
    """The record rules for one well-framed record: its (rule, detail) problems, and its facts from
    `label` to `content_hash` (None when the schema is too broken to have any).

    The reference implementation: the native scanner passes a record only when this finds nothing,
    and must then produce the same facts.
    """
    try:
        fmap = parse_feature_map(data)
    except ValueError as exc:
        return [("schema.parse", str(exc))], None
    problems = _schema_violations(fmap)
    if problems:
        return problems, None
    for key, expected in _CONSTANTS.items():
        value = fmt.feature_values(fmap, key)[0]
        if value != expected:
            problems.append(("schema.constant", f"{key} is {value!r}, expected {expected!r}"))

    label = fmt.feature_values(fmap, fmt.LABEL)[0]
    encoded = fmt.feature_values(fmap, fmt.ENCODED)[0]
    coords = [list(fmt.feature_values(fmap, k)) for k in _BOX_KEYS]
    box_labels = list(fmt.feature_values(fmap, fmt.BBOX_LABEL))
    num_boxes = len(coords[0])
    if len({len(c) for c in coords}) > 1:
        problems.append(("boxes.length", "coordinate lists of lengths " + "/".join(str(len(c)) for c in coords)))
        coords = [[] for _ in coords]
        num_boxes = 0
    if box_labels and box_labels != [label] * num_boxes:
        problems.append(("labels.box_label", f"box labels {box_labels[:4]} for label {label}"))

    try:
        header = read_jpeg_header(encoded)
        jpeg_h, jpeg_w = float(header.height), float(header.width)
    except JpegError as exc:
        problems.append(("image.not_jpeg", str(exc)))
        jpeg_h = jpeg_w = _NAN
    else:
        undecodable = _undecodable(header)
        problems += undecodable
        # A header TensorFlow refuses needs no decode to be refused (and may ask for gigabytes).
        if decoder is not None and not undecodable and (problem := decoder.problem(encoded)):
            problems.append(("image.decode", problem))

    if any(v != v or v in (_INF, -_INF) for c in coords for v in c):
        problems.append(("boxes.range", "a box coordinate is not a finite number"))
    xmin, ymin, xmax, ymax = coords
    synsets = load_label_map().synsets
    row = (
        label,
        fmt.feature_values(fmap, fmt.SYNSET)[0].decode("utf-8", "replace"),
        synsets[label - 1] if 1 <= label <= NUM_CLASSES else "",
        fmt.feature_values(fmap, fmt.HEIGHT)[0],
        fmt.feature_values(fmap, fmt.WIDTH)[0],
        jpeg_h,
        jpeg_w,
        num_boxes,
        min(xmin, default=_NAN),
        min(ymin, default=_NAN),
        max(xmax, default=_NAN),
        max(ymax, default=_NAN),
        min((b - a for a, b in zip(xmin, xmax, strict=True)), default=_NAN),
        min((b - a for a, b in zip(ymin, ymax, strict=True)), default=_NAN),
        content_hash(encoded),
    )
    return problems, row


@cache
def _synset_by_label() -> np.ndarray:
    return np.array(["", *load_label_map().synsets], dtype=object)


class _Shard:
    """One shard's scan as it accumulates, from Python's frames and the native scanner's records."""

    def __init__(self, path: Path, split: str, decode: str, dali: bool) -> None:
        self.path, self.dali = path, dali
        self.scan = ShardScan(shard=path.name, split=split, file_bytes=path.stat().st_size)
        self.decoder = _Decoder() if decode == "full" else None
        self.rows: list[tuple] = []  # the facts of the frames Python judged, from `index` on
        self.dali_rows: list[tuple[int, int]] = []
        self.clean: list[bytes] = []  # the native scanner's clean records (_RECORD rows), and their synsets
        self.synsets: list[str] = []
        self.memo: dict[bytes, tuple] = {}  # small records already judged: their problems and facts

    def violation(self, rule: str, index: int | None, detail: str) -> None:
        result = self.scan.rules.get(rule)
        if result is None:
            result = self.scan.rules[rule] = RuleResult(rule)
        if len(result.examples) < MAX_EXAMPLES:
            result.add(Violation(rule, self.path.name, index, detail))
        else:
            result.count += 1

    def judge(self, frame: Frame) -> bool:
        """Judge one frame in Python; False when nothing after it can be located."""
        if frame.error is None:
            self.judge_record(frame.index, frame.offset, frame.size, frame.data)
            return True
        self.violation(f"framing.{frame.error.kind}", frame.index, f"offset {frame.offset}: {frame.error}")
        if frame.error.fatal:
            return False
        self.scan.records += 1
        return True

    def judge_record(self, index: int, offset: int, size: int, data: bytes) -> None:
        """Judge one well-framed record in Python."""
        self.scan.records += 1
        if self.dali:
            self.dali_rows.append((offset, size))
        if len(data) > _MEMO_BYTES:
            problems, row = _check_record(data, self.decoder)
        elif (problems_row := self.memo.get(data)) is not None:
            problems, row = problems_row
        else:
            problems, row = _check_record(data, self.decoder)
            if len(self.memo) < _MEMO_ENTRIES:
                self.memo[data] = problems, row
        for rule, detail in problems:
            self.violation(rule, index, detail)
        if row is not None:
            self.rows.append((index, offset, size, *row))

    def take_native(self, raw: bytes, synsets: list, flagged: int, buf: memoryview) -> None:
        """The native scanner's records of one buffer: keep the clean ones, have Python judge the rest."""
        if not flagged and self.decoder is None:  # the usual case, kept free of per-record Python
            self.clean.append(raw)
            self.synsets += synsets
            self.scan.records += len(synsets)
            return
        records = np.frombuffer(raw, _RECORD)
        ok = records["status"] == _native.OK
        self.clean.append(records[ok].tobytes())
        self.synsets += [s for s, keep in zip(synsets, ok, strict=True) if keep]
        self.scan.records += int(ok.sum())
        todo = records if self.decoder is not None else records[~ok]
        # Plain ints, one list per field: per-record numpy scalars would cost more than the judging.
        fields = ("status", "index", "offset", "pos", "size", "image_pos", "image_len")
        columns = (todo[f].tolist() for f in fields)
        for state, index, offset, pos, size, image_pos, image_len in zip(*columns, strict=True):
            if state == _native.OK:  # only in `full` mode: the decode is TensorFlow's
                if problem := self.decoder.problem(bytes(buf[image_pos : image_pos + image_len])):
                    self.violation("image.decode", index, problem)
            elif state == _native.CHECK:
                self.judge_record(index, offset, size, bytes(buf[pos + HEADER : pos + size - FOOTER]))
            else:  # a framing error: re-read from the file by iter_frames, whose messages these are
                for frame in iter_frames(self.path, start=offset, index=index):
                    if not self.judge(frame) or state == _native.DATA_CRC:
                        break

    def finish(self) -> ShardScan:
        """The facts columns in record order, whichever scanner produced each row."""
        scan = self.scan
        names = FACT_COLUMNS[2:]
        columns = list(zip(*self.rows, strict=True)) or [()] * len(names)
        facts = {name: np.array(values, dtype=FACT_DTYPES[name]) for name, values in zip(names, columns, strict=True)}
        if self.synsets:
            records = np.frombuffer(b"".join(self.clean), _RECORD)
            from_c = {name: records[name] for name in names if name in records.dtype.names}
            from_c["synset"] = np.array(self.synsets, dtype=object)
            labels = from_c["label"]
            from_c["label_synset"] = _synset_by_label()[np.where((labels >= 1) & (labels <= NUM_CLASSES), labels, 0)]
            if self.rows:
                both = {name: np.concatenate([from_c[name], facts[name]]) for name in names}
                order = np.argsort(both["index"], kind="stable")
                facts = {name: column[order] for name, column in both.items()}
            else:
                facts = {name: np.ascontiguousarray(from_c[name]) for name in names}
            if self.dali:
                self.dali_rows.extend(zip(records["offset"].tolist(), records["size"].tolist(), strict=True))
                self.dali_rows.sort()
        n = len(facts["index"])
        scan.facts = {"split": np.full(n, scan.split, dtype=object), "shard": np.full(n, scan.shard, dtype=object)}
        scan.facts.update(facts)
        scan.dali_index = self.dali_rows
        if scan.records == 0 and not scan.rules:
            self.violation("shards.empty", None, "no records")
        return scan


def _scan_python(shard: _Shard) -> None:
    for frame in iter_frames(shard.path):
        if not shard.judge(frame):
            break  # nothing after it can be located


def _scan_native(shard: _Shard) -> None:
    """Read the file in chunks into one buffer and let C judge every whole frame in it."""
    file_size = shard.scan.file_bytes
    buf = bytearray(_CHUNK)
    start = filled = index = 0  # file offset of buf[0], bytes in buf, record index of its first frame
    with open(shard.path, "rb", buffering=0) as f:
        while True:
            with memoryview(buf) as view:
                end = min(len(buf), file_size - start)
                while filled < end:
                    n = f.readinto(view[filled:end])
                    if not n:  # the file shrank since it was measured: judge what is there
                        file_size = start + filled
                        break
                    filled += n
                raw, synsets, consumed, need, done, flagged = _native.scan(view[:filled], start, file_size, index)
                index += len(raw) // _RECORD.itemsize
                shard.take_native(raw, synsets, flagged, view)
                if done:
                    return
                if start + filled >= file_size:  # all of the file was there: a broken extension, not a loop forever
                    raise RuntimeError(f"{shard.path}: the native scanner stopped at byte {start + consumed}")
                view[: filled - consumed] = view[consumed:filled]  # the partial frame moves to the front
            start += consumed
            filled -= consumed
            if need > len(buf):  # one frame larger than the buffer
                buf = buf[:filled] + bytearray(need - filled)


def scan_shard(
    path: str | Path, split: str, *, decode: str = "header", dali: bool = False, native: bool | None = None
) -> ShardScan:
    """Read every frame of one shard; return its facts, its violations and, if asked, its DALI index.

    `native` None takes the C scanner when it is built (warning once when it is not); False forces
    the Python reference, which the tests compare it against.
    """
    global _warned
    if native is None:
        native = NATIVE
        if not native and not _warned:
            _warned = True
            warnings.warn(f"{NATIVE_PROBLEM}: scanning in Python, several times slower", RuntimeWarning, stacklevel=2)
    elif native and not NATIVE:
        raise RuntimeError(NATIVE_PROBLEM)
    shard = _Shard(Path(path), split, decode, dali)
    (_scan_native if native else _scan_python)(shard)
    return shard.finish()


def read_image(path: str | Path, offset: int, size: int) -> bytes:
    """The image bytes of the frame at `offset` (a facts row's offset and size): what a duplicate is confirmed on."""
    with open(path, "rb") as f:
        f.seek(offset)
        frame = f.read(size)
    return bytes(fmt.feature_values(parse_feature_map(frame[HEADER : len(frame) - FOOTER]), fmt.ENCODED)[0])
