"""`rn50 validate`: every defect is named by rule, file and record; clean data passes."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import corruption as c
import pytest
import tensorflow as tf
from corruption import HEADER_DEFECTS, RECORD_DEFECTS, TRAIN1, VAL0, VAL1
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.data.rules import RULES
from pipeline.data.scan import scan_shard
from pipeline.data.tfrecord import encode_frame
from pipeline.data.validate import DataValidationError, validate_dataset

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def corpus(sample_dir, tmp_path_factory) -> Path:
    """The sample with one defect per rule, each at a known place."""
    return c.build_corpus(sample_dir, tmp_path_factory.mktemp("corpus") / "imagenet")


@pytest.fixture(scope="module")
def corpus_report(corpus, tmp_path_factory):
    report_dir = tmp_path_factory.mktemp("report")
    report = validate_dataset(corpus, expect="sample", decode="full", workers=2, report_dir=report_dir)
    return report, report_dir


def _where(report, rule):
    return {(v.file, v.record) for v in report.rules[rule].examples}


def test_png_payload_would_fool_decode_jpeg():
    # Why the magic-byte check matters: TensorFlow decodes a PNG through decode_jpeg.
    assert tf.io.decode_jpeg(c.png_bytes(), channels=3).shape == (20, 30, 3)


def test_clean_sample_passes_with_no_false_positive(sample_dir, tmp_path):
    report = validate_dataset(sample_dir, expect="sample", decode="full", report_dir=tmp_path)
    assert report.ok, report.failure_lines()
    assert report.failing() == []  # not even a warning
    assert report.records == 1510
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["valid"] is True
    assert {r["rule"] for r in saved["rules"]} == set(RULES)
    assert Path(report.gx["data_docs"]).is_file()


@pytest.mark.parametrize("index", sorted(RECORD_DEFECTS))
def test_each_record_defect_is_named_by_rule_file_and_record(corpus_report, index):
    report, _ = corpus_report
    rule, _ = RECORD_DEFECTS[index]
    assert (VAL0, index) in _where(report, rule), report.failure_lines()


def test_framing_and_directory_defects(corpus_report):
    report, _ = corpus_report
    assert (VAL0, 20) in _where(report, "framing.data_crc")
    assert (TRAIN1, 5) in _where(report, "framing.length_crc")
    truncated = report.rules["framing.truncated"].examples
    assert [(v.file, v.record) for v in truncated] == [(VAL1, 249)]
    assert ("notes.txt", None) in _where(report, "shards.name")
    assert ("train-00002-of-00004", None) in _where(report, "shards.missing")
    assert ("train-00003-of-00004", None) in _where(report, "shards.empty")
    assert report.rules["counts.split"].count >= 1
    # A repeat inside a split is a warning: counted, reported, not fatal on its own.
    assert (VAL0, 17) in _where(report, "duplicates.within_split")
    assert report.rules["duplicates.within_split"].severity == "warning"


def test_report_files_name_the_offenders(corpus_report):
    report, report_dir = corpus_report
    assert not report.ok
    saved = json.loads((report_dir / "report.json").read_text())
    by_rule = {r["rule"]: r for r in saved["rules"]}
    assert {"file": VAL0, "record": 1} in [
        {"file": e["file"], "record": e["record"]} for e in by_rule["labels.range"]["examples"]
    ]
    assert by_rule["labels.range"]["source"] == "great_expectations"
    assert all(len(r["examples"]) <= 20 for r in saved["rules"])
    assert (report_dir / "gx_validation_result.json").is_file()
    assert Path(report.gx["data_docs"]).read_text().lower().count("<html") >= 1


def test_header_mode_does_not_decode(corpus_report, corpus):
    # The broken entropy data at VAL0 record 13 has intact headers: only `full` mode sees it.
    scan = scan_shard(corpus / VAL0, "validation", decode="header")
    assert 13 not in {v.record for v in scan.violations if v.rule == "image.decode"}
    assert 13 in {v.record for v in scan_shard(corpus / VAL0, "validation", decode="full").violations}


def test_header_mode_rejects_what_a_header_shows_decoding_would_fail_on(corpus):
    scan = scan_shard(corpus / VAL0, "validation", decode="header")
    images = {i: c.encoded(d) for i, d in enumerate(c.frames(corpus / VAL0)) if i in HEADER_DEFECTS}
    for index, (rule, _) in HEADER_DEFECTS.items():
        assert (VAL0, index) in {(v.file, v.record) for v in scan.rules[rule].examples}, (index, scan.violations)
        if index != 27:  # SOS then EOI: TensorFlow decodes that to a flat grey image, with a warning
            with pytest.raises(tf.errors.InvalidArgumentError):
                tf.io.decode_jpeg(images[index], channels=3)
    # Each one once, and nothing else about these records: the image parts of the header are sound.
    flagged = [(v.rule, v.record) for v in scan.violations if v.record in HEADER_DEFECTS]
    assert sorted(flagged) == sorted((rule, i) for i, (rule, _) in HEADER_DEFECTS.items())


def test_missing_split_and_raise_on_failure(sample_dir, tmp_path):
    only_train = tmp_path / "only-train"
    only_train.mkdir()
    for path in sample_dir.glob("train-*"):
        shutil.copy(path, only_train / path.name)
    with pytest.raises(DataValidationError) as caught:
        validate_dataset(only_train, expect="imagenet", raise_on_failure=True)
    report = caught.value.report
    assert ("validation", None) in _where(report, "shards.split")
    assert report.rules["counts.split"].count == 2  # neither split has ImageNet's count
    assert "shards.split" in str(caught.value)


def test_dali_index_matches_the_real_record_offsets(sample_dir, tmp_path):
    validate_dataset(sample_dir, dali_index_dir=tmp_path)
    for shard in sorted(sample_dir.glob("*-of-*")):
        lines = (tmp_path / f"{shard.name}.idx").read_text().splitlines()
        data, offset, expected = shard.read_bytes(), 0, []
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            expected.append(f"{offset} {length + 16}")
            offset += length + 16
        assert lines == expected
        # And TensorFlow agrees on what is at those offsets.
        first = next(iter(tf.data.TFRecordDataset(str(shard)))).numpy()
        start, size = map(int, lines[0].split())
        assert data[start + 12 : start + size - 4] == first


@settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_shards_never_crash_or_hang(sample_dir, tmp_path_factory, data):
    source = (sample_dir / VAL1).read_bytes()[:40_000]
    mode = data.draw(st.sampled_from(["flip", "truncate", "flip-reframed"]))
    if mode == "truncate":
        mutated = source[: data.draw(st.integers(0, len(source)))]
    else:
        positions = data.draw(st.lists(st.integers(0, len(source) - 1), min_size=1, max_size=8))
        buf = bytearray(source)
        for p in positions:
            buf[p] ^= data.draw(st.integers(1, 255))
        mutated = bytes(buf)
        if mode == "flip-reframed":
            # Valid CRCs around corrupted payloads, so the Example and JPEG parsers see the garbage.
            frames, offset = [], 0
            while offset + 12 <= len(source):
                (length,) = struct.unpack_from("<Q", source, offset)
                frames.append(mutated[offset + 12 : offset + 12 + length])
                offset += length + 16
            mutated = b"".join(encode_frame(f) for f in frames)
    path = tmp_path_factory.mktemp("fuzz") / VAL1
    path.write_bytes(mutated)
    scan = scan_shard(path, "validation", decode="header")
    assert all(v.rule in RULES for v in scan.violations)
    assert all(v.file == VAL1 for v in scan.violations)


def _cli(*args):
    return subprocess.run([str(BIN / "rn50"), "validate", *map(str, args)], capture_output=True, text=True, timeout=600)


def test_cli_exit_codes_and_one_line_per_failing_rule(sample_dir, corpus, tmp_path):
    ok = _cli(sample_dir, "--expect", "sample")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "valid" in ok.stdout

    bad = _cli(corpus, "--expect", "sample", "--report-dir", tmp_path)
    assert bad.returncode == 1
    lines = [line for line in bad.stdout.splitlines() if line.startswith(("ERROR ", "WARNING "))]
    rules = [line.split()[1].rstrip(":") for line in lines]
    assert len(rules) == len(set(rules))  # one line per rule
    assert f"ERROR labels.range: 1 violation(s); first: {VAL0} record 1" in bad.stdout
    assert "Traceback" not in bad.stderr

    missing = _cli(tmp_path / "nope")
    assert missing.returncode == 2 and "no such directory" in missing.stderr
    assert _cli(sample_dir, "--workers", "0").returncode == 2
    broken_manifest = tmp_path / "m"
    shutil.copytree(sample_dir, broken_manifest)
    (broken_manifest / "manifest.json").write_text("{")
    result = _cli(broken_manifest, "--expect", "sample")
    assert result.returncode == 2 and "manifest.json" in result.stderr


def test_progress_logs_rates_when_not_on_a_terminal(caplog, monkeypatch):
    from pipeline.data.validate import Progress

    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    progress = Progress(total_bytes=2_000_000, every=0.0)
    with caplog.at_level("INFO", logger="pipeline.data.validate"):
        progress.update(records=10, nbytes=1_000_000)
    progress.close()
    assert progress.bar is None
    assert "50% (10 records)" in caplog.text
    assert "records/s" in caplog.text and "MB/s" in caplog.text


def test_an_image_thinner_than_1_to_20_is_an_error_naming_its_record(sample_dir, tmp_path):
    # No photograph is 1 x 65500. Evaluation crops such an image at a bounded cost, but the record is
    # data gone wrong, so the dataset is refused, naming the record.
    data = tmp_path / "imagenet"
    shutil.copytree(sample_dir, data)
    datas = c.frames(data / VAL0)
    thin = {3: (1, 65500), 4: (300, 14), 5: (5, 100)}  # (height, width); 5 x 100 is 1:20 exactly, allowed
    for index, (h, w) in thin.items():
        jpeg = tf.io.encode_jpeg(tf.fill([h, w, 3], tf.constant(128, tf.uint8))).numpy()
        for change in (c.set_bytes(c.fmt.ENCODED, jpeg), c.set_int(c.fmt.HEIGHT, h), c.set_int(c.fmt.WIDTH, w)):
            datas[index] = c.edit(datas[index], change)
    c.write_frames(data / VAL0, datas)
    report = validate_dataset(data, expect="sample", report_dir=tmp_path / "report")
    result = report.rules["image.aspect_ratio"]
    assert result.severity == "error" and not report.ok
    assert result.count == 2
    assert [(v.file, v.record, v.detail) for v in result.examples] == [
        (VAL0, 3, "height 1, width 65500: 65500:1, beyond 20:1"),
        (VAL0, 4, "height 300, width 14: 21.4:1, beyond 20:1"),
    ]
    assert [r.rule for r in report.failing()] == ["image.aspect_ratio"]  # nothing else about these records
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {"file": VAL0, "record": 3, "detail": "height 1, width 65500: 65500:1, beyond 20:1"} in next(
        r["examples"] for r in saved["rules"] if r["rule"] == "image.aspect_ratio")
