"""`rn50`: one subcommand per pipeline stage, and the project's only command line (`python -m pipeline`
is the same CLI). What a GPU worker, an MPIJob's launcher or a container runs is `rn50 <stage>`; the
Airflow tasks call the same library functions.

Every failure a user can cause ends in one line naming the file and the reason, and a non-zero
exit: 2 for bad arguments or input refused before the work starts, 1 for a check or a stage that ran
and failed (a gate, a record that cannot be read). Handlers raise the kind of failure (pipeline.errors) and
`main` alone turns it into that line and its exit code.

This package is the parser table: each command group's module (data, train, gate, registry, ops) holds its
subcommands' parsers (`add_X`) and handlers (`cmd_X`), and the flags several share are in `shared`. Those
modules import only light things at the top, and their handlers import the heavy libraries (TensorFlow,
Great Expectations, boto3, matplotlib) when they run, so `rn50 --help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from pipeline.cli import data, gate, ops, registry, train
from pipeline.cli.train import _worker_argv
from pipeline.contracts import exit_codes
from pipeline.contracts.exit_codes import FAILED as EXIT_FAILED
from pipeline.contracts.exit_codes import OK as EXIT_OK
from pipeline.contracts.exit_codes import USAGE as EXIT_USAGE
from pipeline.contracts.registry import MODEL
from pipeline.errors import Failed, Refused, Retryable
from pipeline.terminal import printable

# Beside the entry points, the names the tests read from `pipeline.cli`: the exit codes and --model's default
# (defined in pipeline.contracts), and the command each rank of `rn50 train --np N` runs.
__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "MODEL", "_worker_argv", "build_parser", "main"]

# Every subcommand in the order `rn50 --help` lists them: its group's add_X(sub) adds it, with its handler.
SUBCOMMANDS = (
    data.add_make_sample, data.add_describe, data.add_validate,
    train.add_train, train.add_mpijob, gate.add_evaluate, gate.add_import_ngc, train.add_predict,
    gate.add_gate,
    registry.add_publish, registry.add_list, registry.add_pull,
    ops.add_report, ops.add_gc, ops.add_settings,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rn50",
        description="Keep a ResNet50 v1.5 ImageNet classifier fresh: data, training, gate, publish.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (Refused, Failed, Retryable) as exc:  # messages may quote a manifest or a record: printable
        print(f"rn50 {args.command}: error: {printable(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"rn50 {args.command}: interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
    except BrokenPipeError:
        # `rn50 list | head`: the reader has gone, which is not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_codes.OK
