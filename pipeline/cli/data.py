"""The data commands: `rn50 make-sample`, `rn50 describe`, `rn50 validate`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.cli.shared import Subparsers, data_dir_flag, positive_int, quiet_tensorflow
from pipeline.contracts import exit_codes
from pipeline.contracts.names import SAMPLE_MANIFEST, VALIDATION_REPORT
from pipeline.errors import Refused


def cmd_make_sample(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    from pipeline.data.describe import describe_dataset, summary_lines
    from pipeline.data.sample import make_sample

    print(f"writing the sample dataset to {args.out_dir} ...", flush=True)
    try:
        make_sample(args.out_dir)
    except (FileExistsError, NotADirectoryError, PermissionError) as exc:
        raise Refused(str(exc)) from exc
    # Read back what is on disk, so the summary is of the files, not of the intent.
    print("\n".join(summary_lines(args.out_dir, describe_dataset(args.out_dir))))
    print(f"expected counts: {args.out_dir / SAMPLE_MANIFEST}")
    return exit_codes.OK


def cmd_describe(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    from pipeline.data.describe import describe_dataset, summary_lines

    try:
        stats = describe_dataset(args.data_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise Refused(str(exc)) from exc
    print("\n".join(summary_lines(args.data_dir, stats)))
    return exit_codes.OK


def _progress_logging() -> None:
    """Our progress lines only: the root logger stays at WARNING, or GX's INFO chatter floods stderr."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    ours = logging.getLogger("pipeline")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)


def _baseline_summary(path: Path) -> dict[str, Any]:
    """--baseline-summary FILE, read and checked as a summary; ValueError naming the file if it is none."""
    import json

    from pipeline.data.drift import check_summary

    try:
        baseline = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise ValueError(f"{path}: {exc}") from None
    return check_summary(baseline, str(path))


def cmd_validate(args: argparse.Namespace) -> int:
    _progress_logging()
    from pipeline.data.validate import validate_dataset

    try:
        baseline = None if args.baseline_summary is None else _baseline_summary(args.baseline_summary)
        report = validate_dataset(
            args.data_dir,
            expect=args.expect,
            decode=args.decode,
            workers=args.workers,
            report_dir=args.report_dir,
            dali_index_dir=args.dali_index_dir,
            run_name=args.run_name,
            dataset_version=args.dataset_version,
            baseline_summary=baseline,
        )
    except (ValueError, OSError) as exc:
        raise Refused(str(exc)) from exc
    for line in report.failure_lines():
        print(line)
    verdict = "valid" if report.ok else "INVALID"
    print(
        f"{args.data_dir}: {verdict}: {report.records} records in {report.shards} shards, "
        f"{report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s"
        + (f"; report: {report.report_dir}/{VALIDATION_REPORT}" if report.report_dir else "")
    )
    if report.gx.get("data_docs"):
        print(f"Data Docs: {report.gx['data_docs']}")
    return exit_codes.OK if report.ok else exit_codes.FAILED


def _gx_name(text: str) -> str:
    from pipeline.data.gx_suite import check_name

    try:
        return check_name(text, "name")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_make_sample(sub: Subparsers) -> None:
    p = sub.add_parser(
        "make-sample",
        help="write the generated 10-class sample dataset in ImageNet TFRecord format",
        description="Write a small, deterministic dataset in exactly the ImageNet TFRecord format "
        "(10 real classes, train and validation shards, manifest.json). The pipeline's smoke "
        "profile trains on it in minutes on a CPU.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", type=Path,
                   help="directory to write (created; must hold no other files)")
    p.set_defaults(func=cmd_make_sample)


def add_describe(sub: Subparsers) -> None:
    p = sub.add_parser(
        "describe", parents=[data_dir_flag()],
        help="count the records of an ImageNet TFRecord directory per split and label",
        description="Read every shard in DATA_DIR and print records per split and per label, "
        "with the JPEG quirks found (grayscale, progressive, EXIF) and the records with boxes.",
    )
    p.set_defaults(func=cmd_describe)


def add_validate(sub: Subparsers) -> None:
    p = sub.add_parser(
        "validate", parents=[data_dir_flag()],
        help="check every record of an ImageNet TFRecord directory before training on it",
        description="Check shard names and completeness, every frame's CRCs, the Example schema, labels, "
        "JPEG headers, boxes, counts and duplicates. Exit 0 when valid, 1 when a rule fails, 2 on bad usage.",
    )
    # pipeline.data.validate's Expect and Decode: importing it here would cost every command a second (pandas).
    p.add_argument("--expect", choices=("imagenet", "sample", "none"), default="none",
                   help="expected counts: real ILSVRC-2012, the sample's manifest.json, or none (default)")
    p.add_argument("--decode", choices=("header", "full"), default="header",
                   help="header: check JPEG markers and SOF dimensions (fast, default); full: also decode every image")
    p.add_argument("--workers", type=positive_int, default=1, help="processes reading shards in parallel")
    p.add_argument("--report-dir", type=Path, help="write report.json, the GX result and Data Docs here")
    p.add_argument("--dali-index-dir", type=Path, help="write one DALI tfrecord2idx index file per shard here")
    p.add_argument("--run-name", type=_gx_name, help="name the Great Expectations run (e.g. the Airflow run id)")
    p.add_argument("--dataset-version", type=_gx_name,
                   help="the data's version (summary.json records it; the GX data asset is named after it)")
    p.add_argument("--baseline-summary", type=Path, metavar="FILE",
                   help="another dataset's summary.json (e.g. the champion's data_summary.json): the Data Docs "
                   "then show its image-size quantile expectations")
    p.set_defaults(func=cmd_validate)
