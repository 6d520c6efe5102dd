"""evaluate: top-1/top-5 of the trained model over the whole validation split; writes eval.json."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from pipeline.workspace import RunWorkspace
from tasks.common import add_workspace_args, cli, workspace


def run(ws: RunWorkspace, *, data_dir: str) -> dict[str, Any]:
    from pipeline.train.evaluate import evaluate, write_eval

    result = evaluate(data_dir, ws.model)
    path = write_eval(result, ws.model)
    print(f"top-1 {result.top1_accuracy:.2f} %, top-5 {result.top5_accuracy:.2f} % over {result.eval_count} images")
    return {**asdict(result), "eval_json": str(path)}


def _main(args: argparse.Namespace) -> dict[str, Any]:
    return run(workspace(args.run_id, args.workspace_root), data_dir=args.data_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="tasks.evaluate", description=__doc__)
    add_workspace_args(parser)
    parser.add_argument("--data-dir", required=True)
    cli(_main, parser)
