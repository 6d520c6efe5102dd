"""fetch_data: the ImageNet TFRecords pinned by data.dvc at a revision, in the run's own checkout."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pipeline.fetch import FetchError, fetch_data
from pipeline.workspace import RunWorkspace
from tasks.common import REPO, add_workspace_args, cli, final, workspace


def run(ws: RunWorkspace, *, data_rev: str = "HEAD", data_dir: str | None = None,
        repo: Path | None = None) -> dict[str, Any]:
    if data_dir:  # a directory the operator manages: use it as it is
        path = Path(data_dir)
        if not path.is_dir():
            raise final(FileNotFoundError(f"data_dir {path}: no such directory"))
        return {"data_dir": str(path.resolve()), "md5": None, "revision": None, "pulled": False}
    repo = Path(repo or os.environ.get("RN50_REPO", REPO))
    try:
        result = fetch_data(repo, data_rev, ws.checkout, ws.root / "dvc-cache")
    except FetchError as exc:
        if "rev-parse" in str(exc) or "not a DVC pointer" in str(exc):
            raise final(exc) from exc  # a revision that does not exist will not exist on retry either
        raise
    print(f"data {'pulled' if result.pulled else 'already present'}: {result.data_dir} (md5 {result.md5})")
    return {"data_dir": str(result.data_dir), "md5": result.md5, "revision": result.revision, "pulled": result.pulled}


def _main(args: argparse.Namespace) -> dict[str, Any]:
    return run(workspace(args.run_id, args.workspace_root), data_rev=args.data_rev, data_dir=args.data_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="tasks.fetch_data", description=__doc__)
    add_workspace_args(parser)
    parser.add_argument("--data-rev", default="HEAD")
    parser.add_argument("--data-dir")
    cli(_main, parser)
