"""Validation rules: stable ids, what each means, and the violations and results they produce.

Ids are `group.name`; the groups are the ones a user reads about in the README (shards, framing,
schema, labels, image, boxes, counts, duplicates). Reports, logs and tests refer to these ids, so
they never change meaning; a new check gets a new id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]
MAX_EXAMPLES = 20
# An image thinner than this is no photograph (a 1 x 65500 JPEG is data gone wrong).
MAX_ASPECT_RATIO = 20

RULES: dict[str, str] = {
    "shards.name": "every file is named {split}-NNNNN-of-MMMMM",
    "shards.split": "the expected splits are present",
    "shards.total": "all shards of a split agree on MMMMM",
    "shards.missing": "all MMMMM shards of a split are present",
    "shards.empty": "no shard is empty",
    "framing.length_crc": "every frame's length CRC (masked CRC-32C) matches",
    "framing.data_crc": "every frame's data CRC (masked CRC-32C) matches",
    "framing.truncated": "no frame runs past the end of its file",
    "schema.parse": "every record is a tf.train.Example",
    "schema.missing_key": "every required key is present",
    "schema.type": "every key has the right type",
    "schema.arity": "scalar keys have exactly one value",
    "schema.constant": "image/channels = 3, image/colorspace = RGB, image/format = JPEG",
    "schema.unique_record": "(shard, index) identifies one record",
    "labels.range": "1 <= image/class/label <= 1000",
    "labels.synset": "image/class/synset is the label map's synset for the label",
    "labels.box_label": "every box label equals the image label",
    "image.not_jpeg": "the payload is a JPEG: SOI marker and a parsable start-of-frame",
    "image.size_mismatch": "the JPEG's SOF dimensions equal image/height and image/width",
    "image.dimensions": "the JPEG's SOF dimensions are 1-65500 pixels, under 2^29 bytes decoded (TensorFlow's limits)",
    "image.aspect_ratio": f"the JPEG's long side is at most {MAX_ASPECT_RATIO} times its short side",
    "image.encoding": "the JPEG is 8-bit baseline, extended or progressive (SOF0-2, SOF9-10): what TensorFlow decodes",
    "image.scan": "scan data follows the JPEG's first start-of-scan header",
    "image.decode": "the image decodes with channels=3 (full mode)",
    "boxes.length": "the box coordinate lists have equal length",
    "boxes.range": "0 <= xmin < xmax <= 1 and 0 <= ymin < ymax <= 1",
    "counts.rows": "the number of well-formed records is as expected",
    "counts.split": "each split has the expected number of records",
    "counts.class": "each split has the expected classes and records per class",
    "duplicates.cross_split": "no image is in both train and validation (leakage)",
    "duplicates.within_split": "no image repeats within a split",
}
WARNINGS = frozenset({"duplicates.within_split"})


@dataclass(frozen=True)
class Violation:
    rule: str
    file: str  # shard file name, or the split / directory for rules that are not about one file
    record: int | None  # 0-based record index in the file, None when not about one record
    detail: str = ""

    def where(self) -> str:
        return self.file if self.record is None else f"{self.file} record {self.record}"


@dataclass
class RuleResult:
    rule: str
    count: int = 0
    examples: list[Violation] = field(default_factory=list)
    source: str = "rn50"  # "rn50" for our checks, "great_expectations" for the suite's

    @property
    def severity(self) -> Severity:
        return "warning" if self.rule in WARNINGS else "error"

    @property
    def passed(self) -> bool:
        return self.count == 0

    def add(self, violation: Violation, count: int = 1) -> None:
        self.count += count
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(violation)

    def merge(self, other: RuleResult) -> None:
        """Take in another result of the same rule (a shard's): all of its count, examples while there is room."""
        self.count += other.count
        self.examples += other.examples[: MAX_EXAMPLES - len(self.examples)]

    def to_json(self) -> dict:
        return {
            "rule": self.rule,
            "description": RULES[self.rule],
            "severity": self.severity,
            "passed": self.passed,
            "count": self.count,
            "source": self.source,
            "examples": [{"file": v.file, "record": v.record, "detail": v.detail} for v in self.examples],
        }
