"""ImageNet shard file names: `train-00000-of-01024`, `validation-00127-of-00128`.

NVIDIA's scripts find their inputs by these names, and a missing or extra shard changes what the
model sees without any error, so the names are parsed strictly rather than globbed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SPLITS = ("train", "validation")
# Shard counts that `build_imagenet_data.py` uses for the full dataset.
IMAGENET_SHARDS = {"train": 1024, "validation": 128}

_SHARD_RE = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<total>\d{5})$")


@dataclass(frozen=True, order=True)
class ShardName:
    split: str
    index: int
    total: int

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"shard split {self.split!r} is not one of {', '.join(SPLITS)}")
        if not 1 <= self.total <= 99999:
            raise ValueError(f"shard total {self.total} out of range 1..99999")
        if not 0 <= self.index < self.total:
            raise ValueError(f"shard index {self.index} out of range 0..{self.total - 1}")

    def __str__(self) -> str:
        return f"{self.split}-{self.index:05d}-of-{self.total:05d}"


def shard_name(split: str, index: int, total: int) -> str:
    """The file name of shard `index` (0-based) of `total` for `split`."""
    return str(ShardName(split, index, total))


def parse_shard_name(name: str) -> ShardName:
    """Parse a shard file name; raise ValueError naming the rule it breaks."""
    match = _SHARD_RE.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a shard name of the form {{split}}-NNNNN-of-MMMMM")
    return ShardName(match["split"], int(match["index"]), int(match["total"]))


def shard_names(split: str, total: int) -> list[str]:
    """Every shard name of a split, in order."""
    return [shard_name(split, i, total) for i in range(total)]
