"""Validate an ImageNet TFRecord directory before any GPU time is spent on it.

Three layers, cheapest first: the directory (shard names and completeness), every byte of every
shard (framing CRCs, Example schema, JPEG headers; in worker processes, one shard at a time), and
the facts table of all records (a Great Expectations suite for the rules a table expresses well,
plus counts and duplicates). The result is one `ValidationReport`; a failing one is raised as
`DataValidationError`, which the Airflow task turns into a final, non-retried failure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.contracts import names
from pipeline.contracts.names import SAMPLE_MANIFEST
from pipeline.data import drift
from pipeline.data.jpeg import JpegError, read_jpeg_header
from pipeline.data.labels import NUM_CLASSES
from pipeline.data.rules import MAX_ASPECT_RATIO, MAX_EXAMPLES, RULES, RuleResult, Violation
from pipeline.data.scan import FACT_COLUMNS, ShardScan, read_image, scan_shard
from pipeline.data.shards import SPLITS, parse_shard_name, shard_name
from pipeline.files import write_atomic, write_json

log = logging.getLogger(__name__)

Expect = Literal["imagenet", "sample", "none"]
Decode = Literal["header", "full"]

# Real ILSVRC-2012 (build_imagenet_data.py): records per split, and train images per class.
IMAGENET_RECORDS = {"train": 1_281_167, "validation": 50_000}
IMAGENET_VALIDATION_PER_CLASS = 50
IMAGENET_TRAIN_PER_CLASS = (732, 1300)
# Files that may sit beside the shards without being shards.
KNOWN_FILES = frozenset({SAMPLE_MANIFEST})


class DataValidationError(Exception):
    """The data broke at least one rule. Carries the report; retrying cannot fix it."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__("; ".join(report.failure_lines()) or "data validation failed")
        self.report = report


@dataclass
class ValidationReport:
    data_dir: str
    expect: str
    decode: str
    shards: int = 0
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    rules: dict[str, RuleResult] = field(default_factory=lambda: {r: RuleResult(r) for r in RULES})
    gx: dict = field(default_factory=dict)
    report_dir: str | None = None
    summary: dict = field(default_factory=dict)  # drift.summarize's: published with the model, compared next run

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.rules.values() if r.severity == "error")

    def add(self, violation: Violation, count: int = 1) -> None:
        self.rules[violation.rule].add(violation, count)

    def failing(self) -> list[RuleResult]:
        return [r for r in self.rules.values() if not r.passed]

    def failure_lines(self) -> list[str]:
        """One line per failing rule: id, count and the first offending file and record."""
        lines = []
        for r in self.failing():
            first = r.examples[0] if r.examples else None
            where = f"; first: {first.where()}" + (f" ({first.detail})" if first.detail else "") if first else ""
            lines.append(f"{r.severity.upper()} {r.rule}: {r.count} violation(s){where}")
        return lines

    def to_json(self) -> dict:
        return {
            "data_dir": self.data_dir,
            "expect": self.expect,
            "decode": self.decode,
            "valid": self.ok,
            "shards": self.shards,
            "records": self.records,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "rules": [r.to_json() for r in self.rules.values()],
            "great_expectations": self.gx,
        }


# --- the directory ------------------------------------------------------------------------------


def plan_shards(data_dir: Path, expect: Expect, report: ValidationReport) -> dict[str, list[Path]]:
    """The shard files per split, checking names and completeness on the way."""
    by_split: dict[str, dict[int, Path]] = {}
    totals: dict[str, set[int]] = {}
    for path in sorted(data_dir.iterdir()):
        if path.name.startswith(".") or path.name in KNOWN_FILES:
            continue
        try:
            name = parse_shard_name(path.name)
        except ValueError as exc:
            report.add(Violation("shards.name", path.name, None, str(exc)))
            continue
        if not path.is_file():
            report.add(Violation("shards.name", path.name, None, "not a regular file"))
            continue
        by_split.setdefault(name.split, {})[name.index] = path
        totals.setdefault(name.split, set()).add(name.total)

    wanted = SPLITS if expect != "none" else tuple(by_split) or SPLITS
    for split in wanted:
        if split not in by_split:
            report.add(Violation("shards.split", split, None, f"no {split}-NNNNN-of-MMMMM shards"))
    for split, total_set in totals.items():
        if len(total_set) > 1:
            report.add(Violation("shards.total", split, None, f"shards say of {sorted(total_set)}"))
        total = max(total_set)
        for index in range(total):
            if index not in by_split[split]:
                report.add(Violation("shards.missing", shard_name(split, index, total), None, "file not found"))
    return {split: [by_split[split][i] for i in sorted(by_split[split])] for split in by_split}


# --- the bytes ----------------------------------------------------------------------------------


class Progress:
    """Records/s and MB/s: a bar on a terminal, otherwise a log line every few seconds."""

    def __init__(self, total_bytes: int, every: float = 5.0) -> None:
        self.total_bytes, self.every = total_bytes, every
        self.start = self.last = time.monotonic()
        self.records = self.bytes = 0
        self.bar = None
        if sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="validate", dynamic_ncols=True)

    def update(self, records: int, nbytes: int) -> None:
        self.records += records
        self.bytes += nbytes
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = f"{self.records / elapsed:,.0f} records/s, {self.bytes / elapsed / 1e6:,.1f} MB/s"
        if self.bar is not None:
            self.bar.set_postfix_str(rate, refresh=False)
            self.bar.update(nbytes)
        elif time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            share = 100 * self.bytes / max(self.total_bytes, 1)
            log.info("validate: %.0f%% (%d records), %s", share, self.records, rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _scan_all(
    shards: list[tuple[Path, str]], workers: int, decode: Decode, dali: bool, on_done: Callable[[ShardScan], None]
) -> None:
    if workers <= 1:
        for path, split in shards:
            on_done(scan_shard(path, split, decode=decode, dali=dali))
        return
    # spawn, not fork: `full` mode imports TensorFlow in the workers, which must not inherit threads.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(scan_shard, path, split, decode=decode, dali=dali) for path, split in shards]
        for future in futures:
            on_done(future.result())


def _write_dali_index(directory: Path, scan: ShardScan) -> None:
    """One `offset size` line per record, as DALI's tfrecord2idx writes it."""
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / f"{scan.shard}.idx", "".join(f"{offset} {size}\n" for offset, size in scan.dali_index))


def _facts_frame(parts: Iterable[dict[str, np.ndarray]]) -> pd.DataFrame:
    frames = [pd.DataFrame(p, columns=list(FACT_COLUMNS)) for p in parts]
    facts = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(FACT_COLUMNS))
    # Categories keep a 1.3 M-row table near 100 bytes a record.
    for column in ("split", "shard"):
        facts[column] = facts[column].astype("category")
    # One category set for both synset columns, so they can be compared as a pair.
    synsets = pd.CategoricalDtype(sorted(set(facts["synset"]) | set(facts["label_synset"])))
    for column in ("synset", "label_synset"):
        facts[column] = facts[column].astype(synsets)
    facts["content_hash"] = facts["content_hash"].astype(np.uint64)
    return facts


# --- the table ----------------------------------------------------------------------------------


def _expected_counts(data_dir: Path, expect: Expect) -> dict[str, dict] | None:
    if expect == "sample":
        path = data_dir / SAMPLE_MANIFEST
        try:
            manifest = json.loads(path.read_text())
            return {
                split: {"records": info["records"], "per_label": {int(k): v for k, v in info["per_label"].items()}}
                for split, info in manifest["splits"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: not a sample manifest ({exc})") from None
    return None


def check_counts(facts: pd.DataFrame, expect: Expect, expected: dict | None, report: ValidationReport) -> None:
    """Records per split and per class, against ImageNet's real figures or the sample's manifest."""
    if expect == "none":
        return
    for split in SPLITS:
        rows = facts[facts["split"] == split]
        per_label = rows["label"].value_counts()
        if expect == "imagenet":
            want_records = IMAGENET_RECORDS[split]
            if len(per_label) != NUM_CLASSES:
                report.add(Violation("counts.class", split, None, f"{len(per_label)} classes, expected {NUM_CLASSES}"))
            lo, hi = (
                (IMAGENET_VALIDATION_PER_CLASS, IMAGENET_VALIDATION_PER_CLASS)
                if split == "validation"
                else IMAGENET_TRAIN_PER_CLASS
            )
            bad = per_label[(per_label < lo) | (per_label > hi)]
            for label, n in bad.items():
                report.add(Violation("counts.class", split, None, f"label {label}: {n} records, expected {lo}-{hi}"))
        else:
            want = expected.get(split, {"records": 0, "per_label": {}})
            want_records = want["records"]
            got = {int(k): int(v) for k, v in per_label.items()}
            for label in sorted(set(got) | set(want["per_label"])):
                if got.get(label, 0) != want["per_label"].get(label, 0):
                    manifest_says = want["per_label"].get(label, 0)
                    detail = f"label {label}: {got.get(label, 0)} records, manifest says {manifest_says}"
                    report.add(Violation("counts.class", split, None, detail))
        if len(rows) != want_records:
            report.add(Violation("counts.split", split, None, f"{len(rows)} records, expected {want_records}"))


def check_aspect_ratio(facts: pd.DataFrame, report: ValidationReport) -> None:
    """Each record whose JPEG is thinner than 1:MAX_ASPECT_RATIO, by its header's dimensions (an unreadable
    header or a zero side is another rule's)."""
    height, width = facts["jpeg_height"].to_numpy(), facts["jpeg_width"].to_numpy()
    short, long = np.minimum(height, width), np.maximum(height, width)
    thin = facts[(short > 0) & (long > MAX_ASPECT_RATIO * short)]  # NaN compares False
    for i, row in enumerate(thin.head(MAX_EXAMPLES).itertuples()):
        ratio = f"{max(row.jpeg_height, row.jpeg_width) / min(row.jpeg_height, row.jpeg_width):.1f}"
        detail = (f"height {row.jpeg_height:.0f}, width {row.jpeg_width:.0f}: "
                  f"{ratio.removesuffix('.0')}:1, beyond {MAX_ASPECT_RATIO}:1")
        report.add(Violation("image.aspect_ratio", str(row.shard), int(row.index), detail),
                   count=len(thin) if i == 0 else 0)


def _add_rows(report: ValidationReport, rule: str, rows: pd.DataFrame, detail: str) -> None:
    """Count every offending row, keep the first few as examples."""
    for i, row in enumerate(rows.head(MAX_EXAMPLES).itertuples()):
        report.add(Violation(rule, str(row.shard), int(row.index), detail), count=len(rows) if i == 0 else 0)


# (shard, offset, size) of a facts row -> the image bytes of that record
ImageReader = Callable[[str, int, int], bytes]


def image_ids(facts: pd.DataFrame, read: ImageReader) -> np.ndarray:
    """One id per row, equal exactly when the image bytes are equal.

    `content_hash` is a 64-bit fingerprint built from CRCs (see scan.content_hash), which the scan
    gets for free but anyone can collide on purpose, so it only nominates: rows that share one are
    read back, one at a time, and decided by a BLAKE2b digest of the image bytes. Memory holds 32
    bytes per candidate, never the images, however many collide; real duplicates and chance
    collisions are both rare, so this reads a handful of records.
    """
    ids = np.arange(len(facts))
    hashes = facts["content_hash"].to_numpy()
    shared = np.flatnonzero(pd.Series(hashes).duplicated(keep=False).to_numpy())
    shared = shared[np.argsort(hashes[shared], kind="stable")]  # grouped by fingerprint, table order within
    shards, offsets, sizes = (facts[c].to_numpy() for c in ("shard", "offset", "size"))
    for group in np.split(shared, np.flatnonzero(np.diff(hashes[shared])) + 1):
        first_with: dict[bytes, int] = {}
        for row in group:
            image = read(str(shards[row]), int(offsets[row]), int(sizes[row]))
            ids[row] = first_with.setdefault(hashlib.blake2b(image, digest_size=32).digest(), row)
            del image  # before the next read: one image in memory at a time
    return ids


def check_duplicates(facts: pd.DataFrame, report: ValidationReport, read: ImageReader) -> None:
    """Identical image bytes in train and validation leak; within a split they only waste."""
    ids = image_ids(facts, read)
    train = (facts["split"] == "train").to_numpy()
    validation = (facts["split"] == "validation").to_numpy()
    leaked = facts[validation][np.isin(ids[validation], ids[train])]
    _add_rows(report, "duplicates.cross_split", leaked, "same image bytes as a train record")
    for split in (train, validation):
        repeats = pd.Series(ids[split]).duplicated().to_numpy()
        _add_rows(report, "duplicates.within_split", facts[split][repeats], "same image bytes as an earlier record")


def summarize(facts: pd.DataFrame, report: ValidationReport, read: ImageReader,
              dataset_version: str | None) -> dict:
    """The facts in a few kilobytes (drift.summarize), with JPEG headers read back for a seeded sample."""
    shards, offsets, sizes = (facts[c].to_numpy() for c in ("shard", "offset", "size"))

    def header_of(row: int):
        try:  # well-formed records only are in the table, so this fails only on a file changed since the scan
            return read_jpeg_header(read(str(shards[row]), int(offsets[row]), int(sizes[row])))
        except (JpegError, OSError):
            return None

    duplicates = {rule.split(".", 1)[1]: report.rules[rule].count
                  for rule in ("duplicates.within_split", "duplicates.cross_split")}
    return drift.summarize(facts, jpeg=drift.jpeg_fractions(len(facts), header_of), duplicates=duplicates,
                           dataset_version=dataset_version)


def _run_gx(facts: pd.DataFrame, report_dir: Path, expected_rows: int | None, report: ValidationReport, *,
            run_name: str | None = None, dataset_version: str | None = None, baseline: dict | None = None) -> None:
    from pipeline.data.gx_suite import run_expectations  # Great Expectations: seconds to import, only here

    outcome = run_expectations(facts, report_dir, expected_rows=expected_rows, run_name=run_name,
                               dataset_version=dataset_version, baseline=baseline)
    drift_results = [r for r in outcome.results if r.rule.startswith("drift.")]
    for result in outcome.results:
        if result.rule.startswith("drift."):  # validate_data's comparison judges drift; these show it in the Data Docs
            continue
        rule = report.rules[result.rule]
        rule.source = "great_expectations"
        if not result.success:
            examples = result.examples or [("(table)", None)]
            for shard, index in examples:
                rule.add(Violation(result.rule, shard, index, result.expectation), count=0)
            rule.count += max(result.unexpected_count, 1)
    report.gx = {
        "success": all(r.success for r in outcome.results if not r.rule.startswith("drift.")),
        "validation_result": str(outcome.result_json),
        "data_docs": str(outcome.data_docs_index),
        "run_name": outcome.run_name,
        "data_asset": outcome.data_asset,
    }
    if drift_results:
        report.gx["drift"] = [{"rule": r.rule, "expectation": r.expectation, "success": r.success}
                              for r in drift_results]


# --- all of it ----------------------------------------------------------------------------------


def validate_dataset(
    data_dir: str | Path,
    *,
    expect: Expect = "none",
    decode: Decode = "header",
    workers: int = 1,
    report_dir: str | Path | None = None,
    dali_index_dir: str | Path | None = None,
    raise_on_failure: bool = False,
    run_name: str | None = None,
    dataset_version: str | None = None,
    baseline_summary: dict | None = None,
) -> ValidationReport:
    """Check every record in `data_dir`; write report.json, summary.json (drift.summarize), the GX result and
    Data Docs to `report_dir`.

    The GX run is named `run_name` and its data asset `dataset_version` (when given). A `baseline_summary`
    (another dataset's summary.json, e.g. the champion's) adds its image-size quantile expectations
    (drift.quantile_ranges) to the GX run, so the Data Docs show the size drift too.

    Raises ValueError for unusable arguments (no such directory, unreadable manifest), and
    DataValidationError when `raise_on_failure` and a rule fails.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"{data_dir}: no such directory")
    if expect not in ("imagenet", "sample", "none") or decode not in ("header", "full") or workers < 1:
        raise ValueError(f"bad arguments: expect={expect!r} decode={decode!r} workers={workers}")
    expected = _expected_counts(data_dir, expect)  # a bad manifest is a usage error, found before the scan
    started = time.monotonic()
    report = ValidationReport(str(data_dir), expect, decode)
    shards = plan_shards(data_dir, expect, report)
    todo = [(path, split) for split, paths in shards.items() for path in paths]
    report.shards = len(todo)
    progress = Progress(sum(p.stat().st_size for p, _ in todo))
    parts: list[dict[str, np.ndarray]] = []

    def on_done(scan: ShardScan) -> None:
        report.records += scan.records
        report.bytes += scan.file_bytes
        for rule, result in scan.rules.items():
            report.rules[rule].merge(result)
        if dali_index_dir is not None:
            _write_dali_index(Path(dali_index_dir), scan)
        parts.append(scan.facts)
        progress.update(scan.records, scan.file_bytes)

    try:
        _scan_all(todo, workers, decode, dali_index_dir is not None, on_done)
    finally:
        progress.close()
    facts = _facts_frame(parts)
    check_counts(facts, expect, expected, report)
    check_aspect_ratio(facts, report)
    def read(shard: str, offset: int, size: int) -> bytes:
        return read_image(data_dir / shard, offset, size)

    check_duplicates(facts, report, read)
    report.summary = summarize(facts, report, read, dataset_version)

    expected_rows = sum(s["records"] for s in expected.values()) if expected else (
        sum(IMAGENET_RECORDS.values()) if expect == "imagenet" else None
    )
    with tempfile.TemporaryDirectory(prefix="rn50-validate-") as scratch:
        out = Path(report_dir) if report_dir is not None else Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        _run_gx(facts, out, expected_rows, report, run_name=run_name, dataset_version=dataset_version,
                baseline=baseline_summary)
        report.seconds = time.monotonic() - started
        if report_dir is not None:
            report.report_dir = str(out)
            write_json(out / names.DATA_SUMMARY, report.summary)
            write_json(out / names.VALIDATION_REPORT, report.to_json())  # published: never through a link
        else:
            report.gx = {"success": report.gx["success"]}
    if raise_on_failure and not report.ok:
        raise DataValidationError(report)
    return report
