"""Counts over an ImageNet TFRecord directory: records per split and label, and the JPEG quirks.

The sample generator records these counts in its manifest, and `rn50 describe` recounts them from
the files, so the summary a user reads is what is on disk, not what was meant to be written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.format import ImageRecord, read_shard
from pipeline.data.jpeg import read_jpeg_header
from pipeline.data.labels import load_label_map
from pipeline.data.shards import SPLITS, ShardName, parse_shard_name

QUIRKS = ("grayscale", "progressive", "exif", "with_boxes", "boxes")


@dataclass
class SplitStats:
    shards: int = 0
    records: int = 0
    encoded_bytes: int = 0
    per_label: Counter[int] = field(default_factory=Counter)
    quirks: Counter[str] = field(default_factory=Counter)
    min_side: int | None = None
    max_side: int | None = None

    def add(self, record: ImageRecord) -> None:
        header = read_jpeg_header(record.encoded)
        self.records += 1
        self.encoded_bytes += len(record.encoded)
        self.per_label[record.label] += 1
        self.quirks["grayscale"] += header.components == 1
        self.quirks["progressive"] += header.progressive
        self.quirks["exif"] += header.exif
        self.quirks["with_boxes"] += bool(record.boxes)
        self.quirks["boxes"] += len(record.boxes)
        lo, hi = min(record.height, record.width), max(record.height, record.width)
        self.min_side = lo if self.min_side is None else min(self.min_side, lo)
        self.max_side = hi if self.max_side is None else max(self.max_side, hi)

    def add_all(self, records: Iterable[ImageRecord]) -> SplitStats:
        for record in records:
            self.add(record)
        return self

    def to_json(self) -> dict:
        return {
            "shards": self.shards,
            "records": self.records,
            "per_label": {str(label): n for label, n in sorted(self.per_label.items())},
            "quirks": {k: int(self.quirks[k]) for k in QUIRKS},
        }


def find_shards(data_dir: Path) -> dict[str, list[Path]]:
    """Shard files per split, in index order. Files that are not shards are not returned."""
    found: dict[str, list[tuple[ShardName, Path]]] = {}
    for path in sorted(data_dir.iterdir()):
        try:
            name = parse_shard_name(path.name)
        except ValueError:
            continue
        found.setdefault(name.split, []).append((name, path))
    return {split: [p for _, p in sorted(found[split])] for split in SPLITS if split in found}


def describe_dataset(data_dir: str | Path) -> dict[str, SplitStats]:
    """Read every record of every shard in `data_dir` and count it."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such directory")
    shards = find_shards(data_dir)
    if not shards:
        raise FileNotFoundError(f"{data_dir}: no shard files named like train-00000-of-01024")
    stats = {}
    for split, paths in shards.items():
        stats[split] = SplitStats(shards=len(paths))
        for path in paths:
            try:
                stats[split].add_all(read_shard(path))
            except Exception as exc:  # any reader failure becomes one line naming the shard
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ValueError(f"{path}: {reason}") from exc
    return stats


def summary_lines(data_dir: str | Path, stats: dict[str, SplitStats]) -> list[str]:
    """A human-readable summary: per split, then per label with its synset and name."""
    labels = load_label_map()
    all_labels = sorted(set().union(*(s.per_label for s in stats.values())))
    out = [f"{data_dir}: {len(all_labels)} classes"]
    for split, s in stats.items():
        q = s.quirks
        out.append(
            f"  {split:<10} {s.records:>7} records in {s.shards:>4} shards, "
            f"{s.encoded_bytes / 1e6:.1f} MB of JPEG, sides {s.min_side}-{s.max_side} px; "
            f"{q['grayscale']} grayscale, {q['progressive']} progressive, {q['exif']} EXIF; "
            f"{q['with_boxes']} with boxes"
        )
    out.append(f"  {'label':>5} {'synset':<9} " + " ".join(f"{split:>10}" for split in stats) + "  name")
    for label in all_labels:
        counts = " ".join(f"{s.per_label[label]:>10}" for s in stats.values())
        out.append(f"  {label:>5} {labels.synset(label):<9} {counts}  {labels.name(label)}")
    return out
