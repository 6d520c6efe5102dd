"""`rn50`: one subcommand per pipeline stage. `python -m pipeline` is the same CLI.

Every failure a user can cause ends in one line naming the file and the reason, and a non-zero
exit: 2 for bad arguments or input, 1 for a check that ran and failed. Heavy libraries are imported
inside the commands, so `rn50 --help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments or unusable input: reported in one line, exit code 2."""


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter would bury the one line a user needs to read.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cmd_make_sample(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from pipeline.data.describe import describe_dataset, summary_lines
    from pipeline.data.sample import MANIFEST, make_sample

    print(f"writing the sample dataset to {args.out_dir} ...", flush=True)
    try:
        make_sample(args.out_dir)
    except (FileExistsError, NotADirectoryError, PermissionError) as exc:
        raise UsageError(str(exc)) from exc
    # Read back what is on disk, so the summary is of the files, not of the intent.
    print("\n".join(summary_lines(args.out_dir, describe_dataset(args.out_dir))))
    print(f"expected counts: {args.out_dir / MANIFEST}")
    return EXIT_OK


def cmd_describe(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from pipeline.data.describe import describe_dataset, summary_lines

    try:
        stats = describe_dataset(args.data_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    print("\n".join(summary_lines(args.data_dir, stats)))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    import logging

    # Our progress lines only: the root logger stays at WARNING, or GX's INFO chatter floods stderr.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    ours = logging.getLogger("pipeline")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    from pipeline.data.validate import validate_dataset

    try:
        report = validate_dataset(
            args.data_dir,
            expect=args.expect,
            decode=args.decode,
            workers=args.workers,
            report_dir=args.report_dir,
            dali_index_dir=args.dali_index_dir,
        )
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from exc
    for line in report.failure_lines():
        print(line)
    verdict = "valid" if report.ok else "INVALID"
    print(
        f"{args.data_dir}: {verdict}: {report.records} records in {report.shards} shards, "
        f"{report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s"
        + (f"; report: {report.report_dir}/report.json" if report.report_dir else "")
    )
    if report.gx.get("data_docs"):
        print(f"Data Docs: {report.gx['data_docs']}")
    return EXIT_OK if report.ok else EXIT_FAILED


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", metavar="DATA_DIR", type=Path, help="directory of train-*/validation-* shards")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rn50",
        description="Keep a ResNet50 v1.5 ImageNet classifier fresh: data, training, gate, publish.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "make-sample",
        help="write the generated 10-class sample dataset in ImageNet TFRecord format",
        description="Write a small, deterministic dataset in exactly the ImageNet TFRecord format "
        "(10 real classes, train and validation shards, manifest.json). The pipeline's smoke "
        "profile trains on it in minutes on a CPU.",
    )
    p.add_argument(
        "out_dir", metavar="OUT_DIR", type=Path, help="directory to write (created; must hold no other files)"
    )
    p.set_defaults(func=cmd_make_sample)

    p = sub.add_parser(
        "describe",
        help="count the records of an ImageNet TFRecord directory per split and label",
        description="Read every shard in DATA_DIR and print records per split and per label, "
        "with the JPEG quirks found (grayscale, progressive, EXIF) and the records with boxes.",
    )
    _add_data_dir(p)
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser(
        "validate",
        help="check every record of an ImageNet TFRecord directory before training on it",
        description="Check shard names and completeness, every frame's CRCs, the Example schema, labels, "
        "JPEG headers, boxes, counts and duplicates. Exit 0 when valid, 1 when a rule fails, 2 on bad usage.",
    )
    _add_data_dir(p)
    p.add_argument(
        "--expect", choices=("imagenet", "sample", "none"), default="none",
        help="expected counts: real ILSVRC-2012, the sample's manifest.json, or none (default)",
    )
    p.add_argument(
        "--decode", choices=("header", "full"), default="header",
        help="header: check JPEG markers and SOF dimensions (fast, default); full: also decode every image",
    )
    p.add_argument("--workers", type=_positive_int, default=1, help="processes reading shards in parallel")
    p.add_argument("--report-dir", type=Path, help="write report.json, the GX result and Data Docs here")
    p.add_argument("--dali-index-dir", type=Path, help="write one DALI tfrecord2idx index file per shard here")
    p.set_defaults(func=cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as exc:
        print(f"rn50 {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"rn50 {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
