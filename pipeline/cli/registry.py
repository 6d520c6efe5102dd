"""The registry commands: `rn50 publish`, `rn50 list`, `rn50 pull`.

An S3, integrity or registry failure ends in one line free of credentials and exit 1; progress goes to
stderr, so stdout holds only what a script reads (the URI, the table, the JSON).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline import settings
from pipeline.cli.shared import Subparsers, positive_int, quiet_tensorflow, registry_flags, setting_default
from pipeline.contracts import exit_codes
from pipeline.contracts.registry import model_prefix
from pipeline.errors import Failed, Refused
from pipeline.redact import redact
from pipeline.terminal import printable


def _publish_logging() -> None:
    """Progress of publish/pull on stderr (stdout is kept for the URI a script reads), credentials redacted."""
    import logging

    class Redacting(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.msg, record.args = printable(redact(record.getMessage())), None
            return True

    ours = logging.getLogger("pipeline.publish")
    if not ours.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(Redacting())
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = False


def _registry_failed(exc: BaseException) -> Failed:
    """An S3, integrity or registry failure as the one line main() prints, free of credentials: exit 1."""
    return Failed(redact(" ".join(str(exc).split())))


def _export(model_dir: Path) -> None:
    """model.keras, saved_model/ and labels.txt from the latest checkpoint, before publishing them."""
    quiet_tensorflow()
    try:
        from pipeline.train.export import export_serving

        export_serving(model_dir)
    except ImportError as exc:
        raise Refused(f"cannot export model.keras and saved_model/ ({exc}); --no-export publishes without "
                      "them") from exc
    except (FileNotFoundError, ValueError) as exc:
        raise Refused(str(exc)) from exc


def _lineage(args: argparse.Namespace) -> dict[str, Any] | None:
    """What the command line says of how the model was made, for the manifest; None when it says nothing."""
    facts = (("hosts", args.hosts), ("num_gpus", args.num_gpus))
    lineage: dict[str, Any] = {k: v for k, v in facts if v is not None}
    if args.data_dir is not None:
        if not args.data_dir.is_dir():
            raise Refused(f"--data-dir {args.data_dir}: no such directory")
        from pipeline.fetch import data_dir_record

        dataset = data_dir_record(args.data_dir)
        lineage |= {"dataset_version": dataset["dataset_version"], "dataset": dataset}
    return lineage or None


def cmd_publish(args: argparse.Namespace) -> int:
    _publish_logging()
    from pipeline.publish.dvc_pointer import DvcError
    from pipeline.publish.publish import PublishError, PublishRefused
    from pipeline.publish.registry import RegistryError
    from pipeline.publish.store import StoreError, make_client
    from pipeline.publish.upload import ConflictError
    from pipeline.stages.publish import publish_model, read_decision

    if not args.model_dir.is_dir():
        raise Refused(f"{args.model_dir}: no such model directory")
    if args.validation_report is not None and not args.validation_report.is_file():
        raise Refused(f"{args.validation_report}: no such validation report")
    try:
        read_decision(args.model_dir)  # refuse before spending seconds on the export
    except PublishRefused as exc:
        raise _registry_failed(exc) from exc
    if args.export:
        _export(args.model_dir)
    lineage = _lineage(args)
    try:
        result = publish_model(
            args.model_dir, client=make_client(), bucket=args.bucket, prefix=args.prefix, model=args.model,
            run_id=args.run_id, lineage=lineage, dvc_repo=args.dvc_repo,
            validation_report=args.validation_report,
        )
    except PublishRefused as exc:
        raise _registry_failed(exc) from exc
    except (PublishError, DvcError, ValueError) as exc:
        raise Refused(str(exc)) from exc
    except (StoreError, RegistryError, ConflictError) as exc:
        raise _registry_failed(exc) from exc
    top1 = result.manifest.get("metrics", {}).get("top1_accuracy")
    print(printable(f"published {result.version} (top-1 {top1} %, {result.bytes / 1e6:.1f} MB); latest is "
                    f"{result.latest}"),
          file=sys.stderr)
    print(printable(result.uri))
    return exit_codes.OK


def _short_dataset(value: object) -> str:
    """A dataset version in 12 columns: a DVC md5's first 12 digits (as a short git sha), dir:<fingerprint>."""
    from pipeline.fetch import UNVERSIONED

    text = "-" if value is None else str(value)
    return ("dir:" + text.removeprefix(UNVERSIONED) if text.startswith(UNVERSIONED) else text)[:12]


def _percent(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _print_versions(versions: list[dict[str, Any]], base: str) -> None:
    """The `rn50 list` table of version_summary rows, within 120 columns: the date without its time (--json has
    it), and the report's URI under the registry's, `base`, which the last line names once."""
    rows = [("VERSION", "DATE (UTC)", "TOP-1 %", "TOP-5 %", "BASELINE PASSED", "GATE", "DATASET", "REPORT")]
    for v in versions:
        report = v["report"].removeprefix(base) if v["report"] else "-"
        cells = (str(v["version"]), str(v["created_at"] or "")[:10], _percent(v["top1_accuracy"]),
                 _percent(v["top5_accuracy"]), v["baseline"] or "-", f"{v['verdict']}{' forced' * v['forced']}",
                 _short_dataset(v["dataset_version"]), report + ("  latest" if v["latest"] else ""))
        rows.append(tuple(printable(c) for c in cells))  # manifest text: never a command to the terminal
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        # The figures right-aligned; the last column (no width: nothing follows it) as it is.
        cells = [c.rjust(w) if i in (2, 3) else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))]
        print("  ".join([*cells, row[-1]]))
    print(f"REPORT is under {printable(base)}")


def cmd_list(args: argparse.Namespace) -> int:
    _publish_logging()
    from pipeline.publish.registry import RegistryError, list_versions, read_latest, version_summary
    from pipeline.publish.store import Store, StoreError, make_client

    try:
        store = Store(make_client(), args.bucket)
        manifests = list_versions(store, args.bucket, args.prefix, args.model)
        latest = (read_latest(store, args.prefix, args.model)[0] or {}).get("version")
        base = f"s3://{args.bucket}/{model_prefix(args.prefix, args.model)}"
    except ValueError as exc:
        raise Refused(str(exc)) from exc
    except (StoreError, RegistryError) as exc:
        raise _registry_failed(exc) from exc
    versions = [version_summary(m, latest) for m in manifests]
    if args.json:
        import json

        print(json.dumps(versions, indent=2))
    elif not versions:
        print(f"no published versions under {printable(base)}")
    else:
        _print_versions(versions, base)
    return exit_codes.OK


def cmd_pull(args: argparse.Namespace) -> int:
    _publish_logging()
    from pipeline.publish.pull import IntegrityError, pull_version
    from pipeline.publish.registry import RegistryError
    from pipeline.publish.store import StoreError, make_client

    try:
        result = pull_version(make_client(), args.bucket, args.dest, prefix=args.prefix, model=args.model,
                              version=args.version)
    except (FileExistsError, ValueError) as exc:
        raise Refused(str(exc)) from exc
    except (IntegrityError, StoreError, RegistryError) as exc:
        raise _registry_failed(exc) from exc
    print(printable(f"pulled {result.version} into {result.dest}: {result.files} files, {result.bytes / 1e6:.1f} MB, "
                    "every sha256 verified against the manifest"))
    return exit_codes.OK


def add_publish(sub: Subparsers) -> None:
    p = sub.add_parser(
        "publish", parents=[registry_flags()],
        help="publish a gated model directory as the next immutable version in S3 (and a DVC pointer)",
        description="Upload MODEL_DIR (latest checkpoint, model.keras, eval.json, decision.json, metrics.jsonl, "
        "config.json, and the validation report) as s3://BUCKET/PREFIX/MODEL/vNNNN/, manifest.json last, then "
        "move latest.json. Refuses a model the gate did not pass. A retry with the same --run-id resumes the "
        "same version. Credentials and endpoint come from the standard AWS environment (AWS_ENDPOINT_URL, ...). "
        "Prints the version's URI.",
    )
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--run-id", help="identifies this publish across retries (default: from the files' names, "
                   "sizes and times)")
    p.add_argument("--validation-report", type=Path,
                   help="the data validation's report.json (`rn50 validate --report-dir`), stored as report.json, with "
                   "the summary.json beside it as data_summary.json; MODEL_DIR/report/ (`rn50 report`) goes in too")
    p.add_argument("--dvc-repo", type=Path, default=settings.DVC_REPO.get(),
                   help="registry repo for models/MODEL.dvc, committed and tagged MODEL@vNNNN when it is a git repo "
                   f"(default {setting_default(settings.DVC_REPO)})")
    p.add_argument("--export", action=argparse.BooleanOptionalAction, default=True,
                   help="write model.keras, saved_model/ and labels.txt from the latest checkpoint first (default: "
                   "yes; needs TensorFlow); with --no-export, an export older than the checkpoint is refused")
    p.add_argument("--hosts", help="training hosts, recorded in the manifest")
    p.add_argument("--num-gpus", type=positive_int, help="GPUs the model trained on, recorded in the manifest")
    p.add_argument("--data-dir", type=Path, help="the data the model trained on, when data.dvc does not pin it: "
                   "recorded as 'unversioned:' and a fingerprint of its files (default: the md5 data.dvc pins)")
    p.set_defaults(func=cmd_publish)


def add_list(sub: Subparsers) -> None:
    p = sub.add_parser(
        "list", parents=[registry_flags()],
        help="list the published versions: top-1/top-5, baseline passed, gate, dataset, date, report",
        description="One line per complete version (one with a manifest), oldest first: top-1 and top-5 (%), the "
        "live baseline its gate measured it against (champion vNNNN, ngc, or none: the floor alone), the gate's "
        "verdict and whether publishing was forced, the dataset version (12 characters), and its run report "
        "(report/index.html) when the version holds one. The one latest.json names is marked `latest`. Versions "
        "still being uploaded are not shown.",
    )
    p.add_argument("--json", action="store_true", help="print the versions as a JSON array (full URIs and versions)")
    p.set_defaults(func=cmd_list)


def add_pull(sub: Subparsers) -> None:
    p = sub.add_parser(
        "pull", parents=[registry_flags()],
        help="download a published version into DEST, verifying every file's sha256",
        description="Download VERSION (default: latest) into DEST (which must not exist, or be empty), checking "
        "every file's size and sha256 against the manifest. Any mismatch (a tampered or truncated object) "
        "fails the pull and leaves DEST untouched. Exit 1 on a refused or failed pull.",
    )
    p.add_argument("dest", metavar="DEST", type=Path)
    p.add_argument("--version", default="latest", help="vNNNN or latest (default)")
    p.set_defaults(func=cmd_pull)

