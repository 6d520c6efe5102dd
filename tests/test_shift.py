"""pipeline/data/shift.py: the shifted copy bench/warm_start.py measures warm starts on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from pipeline.contracts.names import SAMPLE_MANIFEST
from pipeline.data.format import read_shard
from pipeline.data.jpeg import read_jpeg_header
from pipeline.data.shift import CHANNEL_ORDER, recolour_copy

SHIFTED = {1, 501}


def records(data_dir):
    return {p.name: list(read_shard(p)) for p in sorted(data_dir.glob("*-of-*"))}


def pixels(jpeg: bytes) -> np.ndarray:
    return tf.io.decode_jpeg(jpeg, channels=3).numpy().astype(np.int16)


def test_recolour_copy_keeps_labels_and_counts_and_recolours_only_the_chosen_classes(sample_dir, tmp_path):
    changed = recolour_copy(sample_dir, tmp_path / "shifted", sorted(SHIFTED))

    before, after = records(sample_dir), records(tmp_path / "shifted")
    assert list(after) == list(before)  # the same shards, names and all
    assert (tmp_path / "shifted" / SAMPLE_MANIFEST).read_bytes() == (sample_dir / SAMPLE_MANIFEST).read_bytes()
    recoloured = {"train": 0, "validation": 0}
    grey = 0
    for name, old in before.items():
        new = after[name]
        assert [(r.label, r.filename, r.boxes) for r in new] == [(r.label, r.filename, r.boxes) for r in old]
        for a, b in zip(old, new, strict=True):
            header = read_jpeg_header(a.encoded)
            if a.label not in SHIFTED or header.components == 1:  # a grey image has no hue to turn
                assert b.encoded == a.encoded
                grey += a.label in SHIFTED
                continue
            recoloured[name.split("-")[0]] += 1
            assert read_jpeg_header(b.encoded).progressive == header.progressive
            assert read_jpeg_header(b.encoded).exif == header.exif
            original, shifted = pixels(a.encoded), pixels(b.encoded)
            # Far from the original, close to it with its channels rotated (re-encoding a noisy JPEG, with
            # its chroma subsampled again, moves pixels by about 3 on average).
            moved = np.abs(shifted - original).mean()
            assert moved > 20
            assert np.abs(shifted - original[..., list(CHANNEL_ORDER)]).mean() < min(8, moved / 4)
    assert changed == recoloured
    per_label = json.loads((sample_dir / SAMPLE_MANIFEST).read_text())["splits"]
    assert sum(recoloured.values()) + grey == sum(per_label[split]["per_label"][str(label)]
                                                  for split in recoloured for label in SHIFTED)
    assert grey < 0.1 * sum(recoloured.values())  # nearly all of the two classes' images did change


def test_a_label_without_records_is_refused_and_leaves_nothing(sample_dir, tmp_path):
    with pytest.raises(ValueError, match=r"no record has label 2;"):
        recolour_copy(sample_dir, tmp_path / "shifted", [1, 2])
    assert not (tmp_path / "shifted").exists()


def test_a_non_empty_destination_is_refused(sample_dir, tmp_path):
    (tmp_path / "shifted").mkdir()
    (tmp_path / "shifted" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        recolour_copy(sample_dir, tmp_path / "shifted", [1])
    assert (tmp_path / "shifted" / "notes.txt").read_text() == "mine"
