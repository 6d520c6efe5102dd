"""The native shard scanner (`_scan.c`) held to the Python reference, and exact duplicate detection.

The two scanners must agree on everything a report shows: the same violations (rule, file, record
and message, in the same order) and counts, the same records count and DALI index, and the same facts bit for
bit, on clean shards, on the corruption corpus and on fuzzed bytes. The fuzzing is also what shows
that garbage never crashes the C code.
"""

from __future__ import annotations

import os
import struct
import sys
import warnings
from functools import cache
from pathlib import Path

import corruption as c
import google_crc32c
import numpy as np
import pandas as pd
import pytest
from corruption import TRAIN0, VAL0, VAL1
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeline.data
from pipeline.data import format as fmt
from pipeline.data import scan
from pipeline.data.jpeg import read_jpeg_header
from pipeline.data.scan import EDGE, FACT_COLUMNS, ShardScan, content_hash, scan_shard
from pipeline.data.tfrecord import encode_frame, iter_frames
from pipeline.data.validate import image_ids, validate_dataset


def assert_same(path: Path, split: str = "validation", decode: str = "header") -> ShardScan:
    native = scan_shard(path, split, decode=decode, dali=True, native=True)
    python = scan_shard(path, split, decode=decode, dali=True, native=False)
    assert native.rules == python.rules  # every count, and the same examples kept
    assert native.records == python.records and native.dali_index == python.dali_index
    assert list(native.facts) == list(python.facts) == list(FACT_COLUMNS)
    for name in FACT_COLUMNS:
        a, b = native.facts[name], python.facts[name]
        assert a.dtype == b.dtype, name
        if a.dtype.kind == "f":  # bit for bit: NaN for NaN, -0.0 for -0.0
            a, b = a.view(np.uint64), b.view(np.uint64)
        assert a.tolist() == b.tolist(), name
    return native


def test_the_native_scanner_is_built_and_matches_format_py():
    # A stale or missing build would silently cost the validator most of its speed.
    assert scan.NATIVE, scan.NATIVE_PROBLEM


@pytest.mark.parametrize("impl", ["table", "sse4.2", "avx512"])
def test_crc32c_matches_google_crc32c(impl):
    from pipeline.data import _scan

    if impl not in _scan.CRC_IMPLS:
        pytest.skip(f"this CPU has no {impl} CRC-32C")
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
    lengths = [*range(600), 767, 768, 769, 3 * 8192 - 1, 3 * 8192, 3 * 8192 + 1, 100_003, 299_000]
    for n in lengths:
        start = n % 13  # unaligned starts too
        piece = data[start : start + n]
        crc = google_crc32c.value(piece)
        assert _scan.crc32c(piece, impl=impl) == crc, n
        assert _scan.crc32c(piece, crc=0xDEADBEEF, impl=impl) == google_crc32c.extend(0xDEADBEEF, piece), n
        k = n // 3
        assert _scan.crc32c_combine(google_crc32c.value(piece[:k]), google_crc32c.value(piece[k:]), n - k) == crc


def _padded_images(jpeg: bytes) -> list[bytes]:
    """A real JPEG header with payloads around the fingerprint's EDGE and the CRC's block sizes."""
    rng = np.random.default_rng(1)
    sizes = [2 * EDGE - 1, 2 * EDGE, 2 * EDGE + 1, 3 * 8192 + 5, 110_000]
    return [jpeg + rng.integers(0, 256, size=n - len(jpeg), dtype=np.uint8).tobytes() for n in sizes]


def test_clean_shards_agree_and_take_no_python_per_record(sample_dir, tmp_path, monkeypatch):
    datas = c.frames(sample_dir / VAL0)
    images = _padded_images(c.encoded(datas[0]))
    big = tmp_path / VAL0
    c.write_frames(big, [c.edit(d, c.set_bytes(fmt.ENCODED, img)) for d, img in zip(datas, images, strict=False)])
    checked, check = [], scan._check_record
    monkeypatch.setattr(scan, "_check_record", lambda *args: checked.append(args) or check(*args))
    for path in [*sorted(sample_dir.glob("*-of-*")), big]:
        result = assert_same(path, path.name.split("-")[0])
        assert result.violations == []
        assert result.records == len(result.facts["index"]) > 0
    # Only the Python reference ran the record checker: the native scan judged every clean record itself.
    assert len(checked) == sum(len(c.frames(p)) for p in [*sample_dir.glob("*-of-*"), big])
    hashes = scan_shard(big, "validation").facts["content_hash"].tolist()
    assert hashes == [content_hash(img) for img in images]


def test_box_facts_agree_bit_for_bit(sample_dir, tmp_path):
    # min() and max() keep the first of equal values, which tells -0.0 from 0.0 in the facts.
    z, n = 0.0, -0.0
    boxes = [
        ([z, n], [n, z], [z, n], [n, z]),
        ([n, z], [z, n], [n, 0.5], [0.5, n]),
        ([0.25] * 3, [n] * 3, [0.25] * 3, [z] * 3),
    ]
    datas = []
    for d, coords in zip(c.frames(sample_dir / VAL0), boxes, strict=False):
        label = fmt.decode_example(d).label
        for key, values in zip((fmt.BBOX_XMIN, fmt.BBOX_YMIN, fmt.BBOX_XMAX, fmt.BBOX_YMAX), coords, strict=True):
            d = c.edit(d, c.set_floats(key, *values))
        datas.append(c.edit(d, c.set_int(fmt.BBOX_LABEL, *[label] * len(coords[0]))))
    c.write_frames(tmp_path / VAL0, datas)
    facts = assert_same(tmp_path / VAL0).facts
    assert np.signbit(facts["box_xmin_min"]).tolist() == [False, True, False]


def test_corruption_corpus_agrees(sample_dir, tmp_path):
    corpus = c.build_corpus(sample_dir, tmp_path / "imagenet")
    shards = sorted(corpus.glob("*-of-*"))
    assert len(shards) == 5
    for path in shards:
        assert_same(path, path.name.split("-")[0])
    # `full` mode: the native pass for everything but the decode, which stays TensorFlow's.
    result = assert_same(corpus / VAL0, decode="full")
    assert 13 in {v.record for v in result.violations if v.rule == "image.decode"}


@cache
def _fuzz_source(sample_dir: Path) -> tuple[bytes, list[tuple[int, int]]]:
    """A few clean frames, one of them with a 20 KB image, and where each payload lies."""
    datas = c.frames(sample_dir / VAL1)[:6]
    datas[2] = c.edit(datas[2], c.set_bytes(fmt.ENCODED, c.encoded(datas[2]) + bytes(range(256)) * 80))
    frames = [encode_frame(d) for d in datas]
    payloads, offset = [], 0
    for frame in frames:
        payloads.append((offset + 12, len(frame) - 16))
        offset += len(frame)
    return b"".join(frames), payloads


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_shards_agree(sample_dir, tmp_path_factory, data):
    source, payloads = _fuzz_source(sample_dir)
    mode = data.draw(st.sampled_from(["flip", "truncate", "reframe-flip", "reframe-splice"]))
    if mode == "truncate":
        mutated = source[: data.draw(st.integers(0, len(source)))]
    elif mode == "flip":
        buf = bytearray(source)
        for p in data.draw(st.lists(st.integers(0, len(source) - 1), min_size=1, max_size=6)):
            buf[p] ^= data.draw(st.integers(1, 255))
        mutated = bytes(buf)
    else:
        # Valid CRCs around broken payloads, so the Example and JPEG readers see the garbage. Most
        # edits land in the first few hundred bytes, where the Example's structure and the JPEG header are.
        datas = [bytearray(source[o : o + n]) for o, n in payloads]
        for _ in range(data.draw(st.integers(1, 4))):
            record = datas[data.draw(st.integers(0, len(datas) - 1))]
            at = data.draw(st.integers(0, min(len(record), 700) - 1) | st.integers(0, len(record) - 1))
            if mode == "reframe-flip":
                record[at] ^= data.draw(st.integers(1, 255))
            elif data.draw(st.booleans()):
                record[at:at] = data.draw(st.binary(min_size=1, max_size=4))
            else:
                del record[at : at + data.draw(st.integers(1, 4))]
        mutated = b"".join(encode_frame(bytes(d)) for d in datas)
    path = tmp_path_factory.mktemp("fuzz") / VAL1
    path.write_bytes(mutated)
    # Small buffers too, so frames straddle reads and the buffer has to grow.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scan, "_CHUNK", data.draw(st.sampled_from([16, 1000, 4096, 1 << 20])))
        assert_same(path)


def test_every_cut_around_a_frame_boundary_agrees(sample_dir, tmp_path):
    source, payloads = _fuzz_source(sample_dir)
    ends = [offset + size + 4 for offset, size in payloads]  # where each frame ends
    path = tmp_path / VAL1
    for cut in sorted({max(0, end + d) for end in ends[:2] + ends[-1:] for d in range(-20, 14)}):
        path.write_bytes(source[:cut])
        assert_same(path)


_INTS = st.sampled_from([0, 1, 3, 7, 1000, 1001, -1, 2**63 - 1, -(2**63)])
_FLOATS = st.sampled_from([0.0, -0.0, 1e-45, 0.25, 0.5, 0.75, 1.0, 1.5, -0.5, *map(float, ("nan", "inf", "-inf"))])
_KEYS = st.sampled_from([*(f.key for f in fmt.FEATURES), "image/extra"])


def _edit_record(data: st.DataObject, record: bytes, label: int, image: bytes) -> bytes:
    """One well-formed Example edit of the kind a buggy converter makes, or a protobuf oddity."""
    example = c.example_class().FromString(record)
    fmap = example.features.feature
    edit = data.draw(st.sampled_from(["ints", "floats", "bytes", "delete", "clear", "boxes", "image", "raw"]))
    key = data.draw(_KEYS)
    if edit == "ints":
        c.set_int(key, *data.draw(st.lists(_INTS | st.just(label), max_size=3)))(fmap)
    elif edit == "floats":
        c.set_floats(key, *data.draw(st.lists(_FLOATS, max_size=3)))(fmap)
    elif edit == "bytes":
        values = st.sampled_from([b"", b"RGB", b"JPEG", b"CMYK", b"n01440764", b"\xff\xfe", image[:2]])
        c.set_bytes(key, *data.draw(st.lists(values, max_size=2)))(fmap)
    elif edit == "delete" and key in fmap:
        c.delete(key)(fmap)
    elif edit == "clear":
        fmap[key].Clear()  # present, but an empty Feature
    elif edit == "boxes":
        n = data.draw(st.integers(0, 3))
        for k in (fmt.BBOX_XMIN, fmt.BBOX_YMIN, fmt.BBOX_XMAX, fmt.BBOX_YMAX):
            c.set_floats(k, *data.draw(st.lists(_FLOATS, min_size=n, max_size=n)))(fmap)
        box_labels = st.sampled_from([[], [label] * n, [label] * (n + 1), [label + 1] * n])
        c.set_int(fmt.BBOX_LABEL, *data.draw(box_labels))(fmap)
    elif edit == "image":
        at = data.draw(st.integers(0, min(len(image), 400) - 1))
        changed = bytearray(image)
        changed[at] ^= data.draw(st.integers(1, 255))
        variants = [bytes(changed), image[: data.draw(st.integers(0, min(len(image), 800)))], b"\xff\xd8" + image[at:]]
        # The header limits, each side of them: sizes, precision, frame type, what follows the scan header.
        side = st.sampled_from([0, 1, 2, 2732, 2733, 65500, 65501, 65535])  # 2732 x 65500 x 3 < 2^29 <= 2733 x ...
        frame = {"height": side, "width": side, "precision": st.sampled_from([8, 12]), "marker": st.sampled_from(
            [0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB])}  # fmt: skip
        changes = {k: data.draw(v) for k, v in frame.items() if data.draw(st.booleans())}
        tail = data.draw(st.sampled_from([b"", c.EOI, b"\xff", b"\xff\x00", b"\xff\xd0", b"\x00"]))
        variants += [c.with_frame(image, **changes), c.after_scan_header(image, tail), c.without_scan(image)]
        c.set_bytes(fmt.ENCODED, data.draw(st.sampled_from(variants)))(fmap)
    serialized = example.SerializeToString()
    if edit == "raw":  # a repeated key (the last one wins), or an unknown field: valid protobuf both
        other = c.example_class()()
        c.set_int(key, label)(other.features.feature)
        serialized += data.draw(st.sampled_from([other.SerializeToString(), b"\x12\x00", b"\x1a\x01x"]))
    return serialized


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_edited_records_agree(sample_dir, tmp_path_factory, data):
    source, payloads = _fuzz_source(sample_dir)
    datas = [source[o : o + n] for o, n in payloads]
    originals = [(r.label, r.encoded) for r in map(fmt.decode_example, datas)]
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(datas) - 1))
        datas[i] = _edit_record(data, datas[i], *originals[i])
    path = tmp_path_factory.mktemp("edited") / VAL1
    c.write_frames(path, datas)
    assert_same(path)


@settings(max_examples=300, deadline=None)
@given(buf=st.binary(max_size=3000), base=st.integers(0, 100), extra=st.integers(0, 5000))
def test_the_c_scanner_takes_any_bytes(buf, base, extra):
    from pipeline.data import _scan

    raw, synsets, consumed, need, done, flagged = _scan.scan(buf, base, base + len(buf) + extra, 7)
    records = np.frombuffer(raw, scan._RECORD)
    assert len(records) == len(synsets) and 0 <= consumed <= len(buf)
    assert set(records["status"].tolist()) <= {_scan.OK, _scan.CHECK, _scan.DATA_CRC, _scan.FATAL}
    assert flagged == int((records["status"] != _scan.OK).sum())
    assert records["index"].tolist() == list(range(7, 7 + len(records)))
    assert done or need > len(buf) - consumed
    with pytest.raises(ValueError):
        _scan.scan(buf, base + 1, base, 0)


# --- duplicates: the fingerprint nominates, the bytes decide -----------------------------------


def test_a_fingerprint_collision_is_not_a_duplicate(sample_dir, tmp_path):
    d = c.frames(sample_dir / VAL0)[:4]
    x, z = c.encoded(d[0]), c.encoded(d[1])
    y = c.forge_collision(x)
    assert y != x and content_hash(y) == content_hash(x) and read_jpeg_header(y) == read_jpeg_header(x)
    with_image = lambda data, image: c.edit(data, c.set_bytes(fmt.ENCODED, image))
    train, validation = "train-00000-of-00001", "validation-00000-of-00001"
    c.write_frames(tmp_path / train, [d[0], d[1], with_image(d[2], z)])  # record 2 repeats record 1
    c.write_frames(tmp_path / validation, [with_image(d[3], y), with_image(d[2], x)])  # y collides; x leaks

    facts = scan_shard(tmp_path / validation, "validation").facts
    assert facts["content_hash"][0] == facts["content_hash"][1]  # the collision really reaches the check
    report = validate_dataset(tmp_path, decode="header")
    cross, within = report.rules["duplicates.cross_split"], report.rules["duplicates.within_split"]
    assert (cross.count, [(v.file, v.record) for v in cross.examples]) == (1, [(validation, 1)])
    assert (within.count, [(v.file, v.record) for v in within.examples]) == (1, [(train, 2)])
    assert cross.severity == "error" and within.severity == "warning"


def test_only_rows_that_share_a_fingerprint_are_read_back():
    facts = pd.DataFrame(
        {"shard": ["a", "a", "b", "b", "b"], "offset": [0, 10, 0, 10, 20], "size": [10] * 5,
         "content_hash": np.array([5, 7, 7, 7, 9], dtype=np.uint64)}
    )  # fmt: skip
    images = {("a", 10): b"same", ("b", 0): b"other", ("b", 10): b"same"}
    reads = []

    def read(shard: str, offset: int, size: int) -> bytes:
        reads.append((shard, offset))
        return images[shard, offset]

    assert image_ids(facts, read).tolist() == [0, 1, 2, 1, 4]
    assert sorted(reads) == sorted(images)


# --- without the extension ---------------------------------------------------------------------


def test_without_the_extension_python_scans_after_one_warning(sample_dir, monkeypatch):
    # What an unbuilt extension looks like to the import.
    monkeypatch.setitem(sys.modules, "pipeline.data._scan", None)
    monkeypatch.delattr(pipeline.data, "_scan")
    native, _, problem = scan._load_native()
    assert native is None and "not built" in problem
    monkeypatch.setattr(scan, "NATIVE", False)
    monkeypatch.setattr(scan, "NATIVE_PROBLEM", problem)
    monkeypatch.setattr(scan, "_warned", False)
    path = sample_dir / TRAIN0
    with pytest.warns(RuntimeWarning, match="not built.*scanning in Python"):
        first = scan_shard(path, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = scan_shard(path, "train")
    assert first.violations == second.violations == [] and first.records == second.records > 0
    with pytest.raises(RuntimeError, match="not built"):
        scan_shard(path, "train", native=True)


def test_iter_frames_resumes_at_a_frame_boundary(sample_dir):
    frames = list(iter_frames(sample_dir / VAL0))
    resumed = list(iter_frames(sample_dir / VAL0, start=frames[3].offset, index=3))
    assert resumed == frames[3:]
    assert struct.unpack_from("<Q", (sample_dir / VAL0).read_bytes(), frames[3].offset)[0] == frames[3].size - 16
    assert os.path.getsize(sample_dir / VAL0) == frames[-1].offset + frames[-1].size
