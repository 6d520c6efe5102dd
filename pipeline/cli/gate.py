"""Measuring and judging a model: `rn50 evaluate` writes its eval.json, `rn50 import-ngc` makes NVIDIA's
checkpoint a model directory (the usual live baseline), `rn50 gate` decides from both."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli.shared import Subparsers, model_flags, positive_int, quiet_tensorflow
from pipeline.contracts import exit_codes
from pipeline.contracts.names import DECISION_FILE
from pipeline.errors import Failed, Refused
from pipeline.gate import DEFAULT_TOLERANCE, MAX_TOLERANCE, GateFailed, run_gate
from pipeline.recipe import PROFILES
from pipeline.terminal import printable


def cmd_evaluate(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    from pipeline.data.input import UnreadableRecordError
    from pipeline.train.evaluate import EvaluationError, evaluate, write_eval

    try:
        result = evaluate(args.data_dir, args.model_dir, batch_size=args.batch_size)
    except UnreadableRecordError as exc:
        raise Failed(str(exc)) from exc
    except (ValueError, FileNotFoundError) as exc:
        raise Refused(str(exc)) from exc
    except EvaluationError as exc:
        print(f"rn50 evaluate: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    path = write_eval(result, args.model_dir)
    print(
        f"top-1 {result.top1_accuracy:.2f} %  top-5 {result.top5_accuracy:.2f} %  over {result.eval_count} images "
        f"({result.eval_throughput:,.1f} img/s) at step {result.step}; wrote {path}"
    )
    return exit_codes.OK


def cmd_import_ngc(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    from pipeline.train.ngc_import import NgcImportError, import_ngc

    try:
        result = import_ngc(args.ckpt, args.model_dir)
    except NgcImportError as exc:  # the checkpoint's fault (or an occupied output), not the command line's
        raise Failed(str(exc)) from exc
    print(f"imported {args.ckpt} (global_step {result.global_step}, {result.head} head) into {result.model_dir}; "
          f"v1.5 check: {result.stride_check}")
    return exit_codes.OK


def cmd_gate(args: argparse.Namespace) -> int:
    from pipeline.stages.baseline import read_champion

    champion = registry = None
    if args.bucket:
        from pipeline.publish.store import make_client

        try:
            champion, registry = read_champion(make_client(), args.bucket, args.prefix, args.model)
        except ValueError as exc:
            raise Refused(str(exc)) from exc
        except Exception as exc:  # the registry unreachable or its latest tampered: one line, not a traceback
            print(printable(f"rn50 gate: cannot read the champion from s3://{args.bucket}/{args.prefix}: {exc}"),
                  file=sys.stderr)
            return exit_codes.FAILED
    try:
        decision = run_gate(
            args.model_dir, profile=args.profile, champion=champion, baseline_dir=args.baseline,
            tolerance=args.tolerance, force_publish=args.force_publish, force_reason=args.force_reason,
            registry=registry,
        )
    except ValueError as exc:
        raise Refused(str(exc)) from exc
    except GateFailed as exc:
        decision = exc.decision
    for reason in decision.reasons:  # they quote the champion's and the baseline's records
        print(printable(reason))
    verdict = decision.verdict.upper() + (" (publish forced)" if decision.force_publish and decision.publish else "")
    print(f"gate: {verdict}; decision: {args.model_dir / DECISION_FILE}")
    return exit_codes.OK if decision.publish else exit_codes.FAILED


def add_evaluate(sub: Subparsers) -> None:
    p = sub.add_parser(
        "evaluate",
        help="top-1/top-5 of the latest checkpoint over every validation record; writes eval.json",
        description="Restore MODEL_DIR's latest checkpoint and score every record of DATA_DIR's validation "
        "split exactly once (resize to size*256/224, centre crop). Writes eval.json and a metrics.jsonl line. "
        "Exit 1 on a record that cannot be read.",
    )
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--batch-size", type=positive_int, help="default: the training batch size")
    p.set_defaults(func=cmd_evaluate)


def add_import_ngc(sub: Subparsers) -> None:
    p = sub.add_parser(
        "import-ngc",
        help="make a model directory from NVIDIA's NGC ResNet50 v1.5 TensorFlow checkpoint",
        description="Map every variable of NVIDIA's TF1 checkpoint (DeepLearningExamples' ConvNets resnet50) onto "
        "our ResNet50 v1.5 and write MODEL_DIR (config.json with the source's path, sha256s and global_step, "
        "checkpoints/), which evaluate, predict, gate and publish take like a trained one. Output 1000, the "
        f"Momentum slots and global_step are left out. Exit {exit_codes.FAILED}, in one line naming the file or "
        "variable, on a missing, extra, misshapen or unreadable variable, a global_step that is no step, a v1 "
        "graph, a file that is not a checkpoint, or a MODEL_DIR that is not empty.",
    )
    p.add_argument("ckpt", metavar="CKPT", type=Path,
                   help="the unpacked NGC checkpoint directory (with its `checkpoint` file) or a checkpoint prefix")
    p.add_argument("model_dir", metavar="MODEL_DIR", type=Path, help="directory to write (new, or empty)")
    p.set_defaults(func=cmd_import_ngc)


def add_gate(sub: Subparsers) -> None:
    p = sub.add_parser(
        "gate", parents=[model_flags()],
        help="pass or fail a trained model against the NGC floor and a live baseline measured on the same data",
        description="Read MODEL_DIR/eval.json, compare top-1 with the profile's floor (NGC's figure, or the smoke "
        "floor) minus a tolerance, and with the live baseline's (--baseline: another model evaluated on the same "
        "data) minus the same tolerance; the record counts must be equal. --bucket records the current `latest` "
        "version; its recorded number decides nothing. Always writes MODEL_DIR/decision.json. Exit 0 to "
        "publish, 1 when the model fails the gate.",
    )
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--profile", choices=tuple(PROFILES), help="default: from config.json")
    bound = f"at most {MAX_TOLERANCE:g} unless --force-publish"
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"percentage points below the floor and the live baseline ({DEFAULT_TOLERANCE:g}; {bound})")
    p.add_argument("--baseline", type=Path, metavar="DIR",
                   help="the live baseline: DIR/eval.json of another model on the same data (`rn50 evaluate` of a "
                   "version `rn50 pull` fetched, of `rn50 import-ngc`'s model or of any model directory, or the DAG's "
                   "baseline/)")
    p.add_argument("--force-publish", action="store_true", help="publish even if the gate fails (needs a reason)")
    p.add_argument("--force-reason", help="why the failing model is published anyway; recorded in the manifest")
    # Not the registry's --bucket default: without --bucket the gate reads no registry at all.
    p.add_argument("--bucket", help="registry bucket: record its `latest` version (the champion) in the decision")
    p.set_defaults(func=cmd_gate)
