"""fetch_data: the ImageNet TFRecords pinned by data.dvc at a revision, in the run's own checkout.

First, when given a retention, it removes the run workspaces idle for longer (`rn50 gc`): the disk
is freed before the next 150 GB are copied onto it. What the run uses is recorded in the workspace
(`data.json`), so publish states the dataset this run really trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import settings
from pipeline.errors import Refused
from pipeline.fetch import FetchError, data_dir_record, fetch_data
from pipeline.files import write_json
from pipeline.workspace import RunWorkspace, gc
from tasks.common import final_failures


def run(ws: RunWorkspace, *, data_rev: str = "HEAD", data_dir: str | None = None,
        repo: Path | None = None, retention_days: float | None = None) -> dict[str, Any]:
    if retention_days:
        for removal in gc(ws.root, retention_days):  # never this run's: create() has just marked it active
            print(removal.describe())
    with final_failures():
        if data_dir:  # a directory the operator manages: use it as it is
            path = Path(data_dir)
            if not path.is_dir():
                raise Refused(f"data_dir {path}: no such directory")
            record, pulled = data_dir_record(path), False
        else:
            repo = Path(repo or settings.REPO.get())
            try:
                result = fetch_data(repo, data_rev, ws)
            except FetchError as exc:
                if "rev-parse" in str(exc) or "not a DVC pointer" in str(exc):
                    raise Refused(str(exc)) from exc  # a revision that does not exist will not exist on retry
                raise
            record = {"source": "dvc", "data_dir": str(result.data_dir), "dataset_version": result.md5,
                      "md5": result.md5, "data_rev": data_rev, "revision": result.revision}
            pulled = result.pulled
            print(f"data {'pulled' if pulled else 'already present'}: {result.data_dir} (md5 {result.md5})")
    write_json(ws.data_record, record)
    return {**record, "pulled": pulled}
