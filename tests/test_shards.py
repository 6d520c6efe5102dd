import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.data.shards import SPLITS, ShardName, parse_shard_name, shard_name, shard_names


def test_imagenet_names():
    assert shard_name("train", 0, 1024) == "train-00000-of-01024"
    assert shard_name("validation", 127, 128) == "validation-00127-of-00128"
    assert parse_shard_name("train-01023-of-01024") == ShardName("train", 1023, 1024)
    assert shard_names("validation", 2) == ["validation-00000-of-00002", "validation-00001-of-00002"]


@given(
    split=st.sampled_from(SPLITS),
    total=st.integers(1, 99999),
    data=st.data(),
)
def test_format_then_parse_round_trips(split, total, data):
    index = data.draw(st.integers(0, total - 1))
    name = shard_name(split, index, total)
    assert len(name) == len(split) + 15
    assert parse_shard_name(name) == ShardName(split, index, total)


@pytest.mark.parametrize(
    "name",
    [
        "train-0-of-1",  # not 5 digits
        "train-000000-of-00001",  # 6 digits
        "train-00001-of-00001",  # index past the end
        "train-00000-of-00000",  # no shards
        "test-00000-of-00001",  # not an ImageNet split
        "Train-00000-of-00001",
        "train-00000-of-00001.tfrecord",
        "train_00000_of_00001",
        " train-00000-of-00001",
        "manifest.json",
        "",
    ],
)
def test_malformed_names_are_rejected(name):
    with pytest.raises(ValueError):
        parse_shard_name(name)


def test_the_error_says_which_rule():
    with pytest.raises(ValueError, match=r"index 5 out of range 0\.\.3"):
        parse_shard_name("train-00005-of-00004")
    with pytest.raises(ValueError, match="not a shard name"):
        parse_shard_name("train.tfrecord")
