"""`make-sample`: a deterministic dataset in the ImageNet format with real ImageNet's quirks."""

import hashlib
import json

import pytest
from support import file_hashes

from pipeline.contracts.names import SAMPLE_MANIFEST
from pipeline.data.describe import describe_dataset, find_shards
from pipeline.data.format import read_shard
from pipeline.data.labels import load_label_map
from pipeline.data.sample import make_sample
from pipeline.data.shards import parse_shard_name


def _records(sample_dir):
    return {split: [r for p in paths for r in read_shard(p)] for split, paths in find_shards(sample_dir).items()}


def test_output_is_byte_for_byte_deterministic(sample_dir, tmp_path):
    again = tmp_path / "again"
    make_sample(again)
    assert file_hashes(again) == file_hashes(sample_dir)


def test_manifest_counts_are_what_is_on_disk(sample_dir):
    manifest = json.loads((sample_dir / SAMPLE_MANIFEST).read_text())
    stats = describe_dataset(sample_dir)
    assert set(stats) == set(manifest["splits"]) == {"train", "validation"}
    for split, s in stats.items():
        expected = manifest["splits"][split]
        assert s.records == expected["records"] == sum(expected["per_label"].values())
        assert {str(k): v for k, v in s.per_label.items()} == expected["per_label"]
        assert s.shards == expected["shards"]


def test_ten_real_synsets_with_their_real_labels(sample_dir):
    labels = load_label_map()
    for split, records in _records(sample_dir).items():
        seen = {(r.label, r.synset, r.text) for r in records}
        assert len(seen) == 10, split
        for label, synset, text in seen:
            assert labels.synset(label) == synset
            assert labels.name(label) == text


def test_shards_several_train_two_validation_none_empty(sample_dir):
    shards = find_shards(sample_dir)
    assert len(shards["train"]) >= 3
    assert len(shards["validation"]) == 2
    for paths in shards.values():
        totals = {parse_shard_name(p.name).total for p in paths}
        assert totals == {len(paths)}
        for path in paths:
            assert sum(1 for _ in read_shard(path)) > 0, path.name
    assert {p.name for p in sample_dir.iterdir()} == {p.name for ps in shards.values() for p in ps} | {SAMPLE_MANIFEST}


def test_varied_sizes_boxes_and_the_jpeg_quirks_of_real_imagenet(sample_dir):
    stats = describe_dataset(sample_dir)
    records = _records(sample_dir)
    for split, s in stats.items():
        assert s.min_side >= 48 and s.max_side <= 128
        assert s.quirks["grayscale"] >= 1, split
        assert s.quirks["progressive"] >= 1, split
        assert s.quirks["exif"] >= 1, split
        box_counts = {len(r.boxes) for r in records[split]}
        assert box_counts == {0, 1, 2}, split
        aspect = [max(r.height, r.width) / min(r.height, r.width) for r in records[split]]
        assert max(aspect) > 1.5
        for r in records[split]:
            assert r.channels == 3 and r.colorspace == "RGB" and r.image_format == "JPEG"
            for b in r.boxes:
                assert 0 <= b.xmin < b.xmax <= 1 and 0 <= b.ymin < b.ymax <= 1


def test_no_image_is_in_both_splits_and_filenames_are_unique(sample_dir):
    records = _records(sample_dir)
    hashes = {split: {hashlib.sha256(r.encoded).digest() for r in rs} for split, rs in records.items()}
    assert not hashes["train"] & hashes["validation"]
    for split, rs in records.items():
        assert len({r.filename for r in rs}) == len(rs), split
        assert len(hashes[split]) == len(rs), split


def test_replaces_an_earlier_sample_but_refuses_foreign_files(tmp_path):
    out = tmp_path / "imagenet"
    out.mkdir()
    (out / "train-00000-of-00009").write_bytes(b"stale shard of another spec")
    make_sample(out)
    assert not (out / "train-00000-of-00009").exists()

    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        make_sample(out)
    assert (out / "notes.txt").read_text() == "mine"


def test_an_interrupted_run_leaves_the_earlier_sample_whole(sample_dir, tmp_path, monkeypatch):
    import shutil

    import pipeline.data.sample as sample

    out = tmp_path / "imagenet"
    shutil.copytree(sample_dir, out)
    before = file_hashes(out)
    real_write, calls = sample.write_shard, []

    def failing_write(path, records):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_write(path, records)

    monkeypatch.setattr(sample, "write_shard", failing_write)
    with pytest.raises(KeyboardInterrupt):
        make_sample(out)
    assert file_hashes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imagenet"]
