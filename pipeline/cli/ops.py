"""The operations commands: `rn50 report` (a run report from files), `rn50 gc` (idle run workspaces),
`rn50 settings` (every RN50_* setting and where its value came from)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline import settings
from pipeline.cli.shared import Subparsers, positive_days, workspace_root_flag
from pipeline.contracts import exit_codes
from pipeline.contracts.names import REPORT_DIR
from pipeline.errors import Failed, Refused


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.report import build_report

    if not args.model_dir.is_dir():
        raise Refused(f"{args.model_dir}: no such model directory")
    out = args.out or args.model_dir / REPORT_DIR
    try:
        index = build_report(out, model_dir=args.model_dir, title=f"ResNet50 v1.5 report: {args.model_dir}")
    except OSError as exc:  # OUT is a file, read-only, or the disk is full
        raise Refused(f"{out}: cannot write the report ({exc.strerror or exc})") from exc
    print(index)
    return exit_codes.OK


def cmd_gc(args: argparse.Namespace) -> int:
    from pipeline.workspace import gc

    root = args.workspace_root
    try:
        removals = gc(root, args.older_than, dry_run=args.dry_run)
    except (OSError, ValueError) as exc:
        raise Refused(str(exc)) from exc
    for removal in removals:
        print(removal.describe(args.dry_run), file=sys.stderr if removal.error else sys.stdout)
    freed = sum(r.bytes for r in removals if not r.error) / 1e9
    done = len([r for r in removals if not r.error])
    print(f"{root}: {done} workspace(s) idle for {args.older_than:g}+ days "
          f"{'would be removed' if args.dry_run else 'removed'}, {freed:.2f} GB")
    return exit_codes.FAILED if any(r.error for r in removals) else exit_codes.OK


def cmd_settings(args: argparse.Namespace) -> int:
    try:
        values = settings.resolved()
    except settings.SettingError as exc:
        raise Failed(str(exc)) from exc
    rows = [("SETTING", "VALUE", "FROM", "MEANING")]
    for setting in settings.SETTINGS:
        value = values[setting.name]
        text = ",".join(value) if isinstance(value, tuple) else "(none)" if value is None else str(value)
        rows.append((setting.name, text or "(none)", "env" if os.environ.get(setting.name, "").strip() else "default",
                     setting.help))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[3])
    return exit_codes.OK


def add_report(sub: Subparsers) -> None:
    p = sub.add_parser(
        "report",
        help="make the run report (index.html and its figures) for a model directory or a pulled version",
        description="Write OUT/index.html and its PNGs from what MODEL_DIR holds (a trained model directory, or a "
        "version `rn50 pull` fetched): metrics.jsonl, eval.json, decision.json, report.json (the data "
        "validation) and the manifest's cost. Whatever is missing shows as not available. Prints the index.html "
        "path; no TensorFlow needed.",
    )
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, help="where to write it (default: MODEL_DIR/report)")
    p.set_defaults(func=cmd_report)


def add_gc(sub: Subparsers) -> None:
    p = sub.add_parser(
        "gc", parents=[workspace_root_flag()],
        help="remove the run workspaces idle for DAYS (their data copies, checkpoints and reports)",
        description="Remove each run workspace under the workspace root in which nothing changed for DAYS days "
        "(a run in progress writes its workspace, so it is kept). Only folders the pipeline made as run "
        "workspaces are removed: the shared DVC cache (.dvc-cache) and anything else in the root stay. "
        "Published versions are in S3 and are not touched. Exit 1 when a workspace could not be removed.",
    )
    p.add_argument("--older-than", metavar="DAYS", type=positive_days, required=True,
                   help="days since anything in the workspace changed (fractions allowed)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    p.set_defaults(func=cmd_gc)


def add_settings(sub: Subparsers) -> None:
    p = sub.add_parser(
        "settings",
        help="print every RN50_* setting: its value here, where it came from, and what it means",
        description="Print each setting of pipeline/settings.py with the value this environment resolves it to "
        "(`env` when set, else the default). Exit 1, naming the variable, when one does not parse.",
    )
    p.set_defaults(func=cmd_settings)

