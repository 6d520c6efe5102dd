"""A record that passes header-mode validation but does not decode: training and evaluation end
naming its shard and record, never deep inside tf.data with an error that names neither."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from itertools import islice
from pathlib import Path

import corruption as c
import keras
import pytest
import tensorflow as tf

from pipeline.data.format import read_shard, write_shard
from pipeline.data.input import UnreadableRecordError, eval_dataset, read_batches, train_dataset
from pipeline.data.scan import scan_shard
from pipeline.recipe import get_profile
from pipeline.train.checkpoint import TrainState
from pipeline.train.evaluate import evaluate
from pipeline.train.loop import train
from pipeline.train.model import build_model

BAD = 2
TRAIN, VALIDATION = "train-00000-of-00001", "validation-00000-of-00001"
CONFIG = get_profile("smoke").replace(batch_size=4, steps=3)


@pytest.fixture(scope="module")
def data_dir(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sample records; record BAD's scan data is cut short after its headers, in both splits."""
    out = tmp_path_factory.mktemp("bad-record")
    records = list(islice(read_shard(sample_dir / c.VAL0), 8))
    records[BAD] = dataclasses.replace(records[BAD], encoded=c.broken_jpeg_body(records[BAD].encoded))
    write_shard(out / TRAIN, records[:4])  # one batch of 4: the first step reads the bad record
    write_shard(out / VALIDATION, records)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained smoke model with a checkpoint, enough to evaluate."""
    out = tmp_path_factory.mktemp("model")
    CONFIG.save(out)
    TrainState(build_model(CONFIG, dtype="float32"), keras.optimizers.SGD(), out).save()
    return out


def _named(data_dir: Path, shard: str) -> str:
    return re.escape(f"{data_dir / shard} record {BAD}: ") + "jpeg::Uncompress failed"


def test_the_record_passes_header_mode_and_only_a_decode_finds_it(data_dir):
    for shard, split in ((TRAIN, "train"), (VALIDATION, "validation")):
        assert scan_shard(data_dir / shard, split, decode="header").violations == []
        full = scan_shard(data_dir / shard, split, decode="full").violations
        assert [(v.rule, v.record) for v in full] == [("image.decode", BAD)]


def test_tf_data_alone_names_neither_shard_nor_record(data_dir):
    # What read_batches replaces.
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        list(eval_dataset(data_dir, batch_size=4, image_size=32))
    assert VALIDATION not in str(caught.value) and "record" not in str(caught.value)


def test_the_input_pipelines_name_the_shard_and_record(data_dir):
    evaluation = read_batches(eval_dataset(data_dir, batch_size=4, image_size=32), data_dir, "validation")
    with pytest.raises(UnreadableRecordError, match=_named(data_dir, VALIDATION)):
        list(evaluation)
    training = read_batches(train_dataset(data_dir, batch_size=4, image_size=32, seed=0), data_dir, "train")
    with pytest.raises(UnreadableRecordError, match=_named(data_dir, TRAIN)):
        list(islice(training, 5))


def test_good_batches_pass_through_unchanged(sample_dir):
    # The wrapper costs nothing and changes nothing on data that reads.
    plain = list(eval_dataset(sample_dir, batch_size=128, image_size=32).as_numpy_iterator())
    batches = read_batches(eval_dataset(sample_dir, batch_size=128, image_size=32), sample_dir, "validation")
    wrapped = [tuple(t.numpy() for t in batch) for batch in batches]
    assert len(wrapped) == len(plain) == 4
    for (xa, ya), (xb, yb) in zip(plain, wrapped, strict=True):
        assert (xa == xb).all() and (ya == yb).all()


def test_evaluate_fails_naming_the_record(data_dir, model_dir):
    with pytest.raises(UnreadableRecordError, match=_named(data_dir, VALIDATION)):
        evaluate(data_dir, model_dir, batch_size=4)


def test_training_fails_naming_the_record(data_dir, tmp_path):
    with pytest.raises(UnreadableRecordError, match=_named(data_dir, TRAIN)):
        train(CONFIG, data_dir, tmp_path / "model")


def _rn50(*args) -> subprocess.CompletedProcess:
    rn50 = Path(sys.executable).parent / "rn50"
    return subprocess.run([rn50, *map(str, args)], capture_output=True, text=True, timeout=600)


def test_rn50_evaluate_says_it_in_one_line_and_exits_1(data_dir, model_dir):
    # Exit 1: the data is at fault, found while the stage ran; 2 would say the command line was.
    result = _rn50("evaluate", "--data-dir", data_dir, "--model-dir", model_dir, "--batch-size", "4")
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(r"rn50 evaluate: error: " + _named(data_dir, VALIDATION), last), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_rn50_train_says_it_in_one_line_and_exits_1(data_dir, tmp_path):
    result = _rn50("train", "--profile", "smoke", "--data-dir", data_dir, "--model-dir", tmp_path / "model",
                   "--batch-size", "4", "--steps", "3")
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(r"rn50 train: error: " + _named(data_dir, TRAIN), last), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
