"""The validator's memory is bounded whatever the input: hostile shards cost time, not memory.

A shard of empty records breaks ten rules per 16-byte frame, and images forged to share the
duplicate check's CRC fingerprint are all candidates at once; neither may make memory grow with
the shard.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import corruption as c
import numpy as np
import pandas as pd

from pipeline.data import format as fmt
from pipeline.data.rules import MAX_EXAMPLES
from pipeline.data.scan import content_hash, read_image, scan_shard
from pipeline.data.tfrecord import encode_frame
from pipeline.data.validate import ValidationReport, check_duplicates

# The child validates a directory and prints its counts and its peak memory (its own and its
# workers'). RLIMIT_DATA caps it, so a regression fails with a MemoryError, not with the machine.
_CHILD = r"""
import json, resource, sys
cap = int(sys.argv[3]) << 20
resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
from pipeline.data.validate import validate_dataset
report = validate_dataset(sys.argv[1], workers=int(sys.argv[2]))
print(json.dumps({
    "records": report.records,
    "rules": {r.rule: [r.count, len(r.examples)] for r in report.failing()},
    "self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
}))
"""
EMPTY = encode_frame(b"")  # 16 bytes: an Example with no features at all
SCALAR_KEYS = sum(f.arity == "scalar" for f in fmt.FEATURES)


def _validate_in_child(data_dir: Path, workers: int, cap_mb: int = 2048) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(data_dir), str(workers), str(cap_mb)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _empty_shards(directory: Path, frames_per_shard: list[int]) -> Path:
    directory.mkdir()
    for i, frames in enumerate(frames_per_shard):
        with open(directory / f"validation-{i:05d}-of-{len(frames_per_shard):05d}", "wb") as f:
            for start in range(0, frames, 1 << 16):
                f.write(EMPTY * min(1 << 16, frames - start))
    return directory


def test_a_shard_of_empty_records_validates_in_bounded_memory(tmp_path):
    # 100 MB of empty records, two shards on two workers: 62.5 million violations. Kept one object
    # each and pickled back to the parent, they took about 72 times the file size.
    frames = 50_000_000 // len(EMPTY)
    tiny = _validate_in_child(_empty_shards(tmp_path / "tiny", [10, 10]), workers=2)
    big = _validate_in_child(_empty_shards(tmp_path / "big", [frames, frames]), workers=2)

    assert tiny["records"] == 20 and big["records"] == 2 * frames
    # Every violation counted, the first MAX_EXAMPLES of each rule kept.
    no_rows = [1, 1]  # and not one well-formed record
    assert big["rules"] == {"schema.missing_key": [2 * frames * SCALAR_KEYS, MAX_EXAMPLES], "counts.rows": no_rows}
    assert tiny["rules"] == {"schema.missing_key": [20 * SCALAR_KEYS, MAX_EXAMPLES], "counts.rows": no_rows}
    # A constant over the tiny shards' run, for the parent and for each worker alike.
    for who in ("self_mb", "workers_mb"):
        assert big[who] - tiny[who] < 100, (who, tiny, big)


def test_images_forged_to_share_a_fingerprint_are_never_held_together(sample_dir, tmp_path):
    # CRC-32C is linear, so anyone can write many different images with one content_hash. Every
    # one of them is a duplicate candidate that is read back; none may stay in memory for the others.
    datas = c.frames(sample_dir / c.VAL0)[:26]
    size = 1 << 20
    rng = np.random.default_rng(0)
    base = c.encoded(datas[0])
    base += rng.integers(0, 256, size=size - len(base), dtype=np.uint8).tobytes()
    images = [c.forge_collision(base, variant) for variant in range(24)]
    assert len(set(images)) == 24 and {content_hash(image) for image in images} == {content_hash(base)}
    images.append(images[5])  # one real repeat within the split
    with_image = lambda data, image: c.edit(data, c.set_bytes(fmt.ENCODED, image))
    validation, train = "validation-00000-of-00001", "train-00000-of-00001"
    c.write_frames(tmp_path / validation, [with_image(d, image) for d, image in zip(datas, images, strict=False)])
    c.write_frames(tmp_path / train, [with_image(datas[25], images[7])])  # and one leak across splits
    facts = pd.concat([pd.DataFrame(scan_shard(tmp_path / s, s.split("-")[0]).facts) for s in (validation, train)])
    facts = facts.reset_index(drop=True)
    report = ValidationReport(str(tmp_path), "none", "header")

    tracemalloc.start()
    try:
        check_duplicates(facts, report, lambda shard, offset, n: read_image(tmp_path / shard, offset, n))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * size, f"{peak / size:.0f} images' worth held at once"
    cross, within = report.rules["duplicates.cross_split"], report.rules["duplicates.within_split"]
    assert (cross.count, [(v.file, v.record) for v in cross.examples]) == (1, [(validation, 7)])
    assert (within.count, [(v.file, v.record) for v in within.examples]) == (1, [(validation, 24)])
