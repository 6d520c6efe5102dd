"""What a run cost: wall time per stage and the GPU-hours of training and evaluation.

Each DAG task records its own stage in the run workspace (`cost/<stage>.json`, one file per stage so
that stages running side by side never write the same file); the report and the manifest read them
all back. A retried stage adds its new attempt to the earlier ones: the GPUs were busy either way.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipeline.contracts.names import COST_DIR
from pipeline.files import read_regular, write_json

TRAINING, EVALUATION = ("train",), ("evaluate", "evaluate_baseline")


def _stage_file(workspace_path: Path, stage: str) -> Path:
    if not stage or not stage.replace("_", "").isalnum():
        raise ValueError(f"stage {stage!r}: expected a task id of letters, digits and '_'")
    return Path(workspace_path) / COST_DIR / f"{stage}.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(read_regular(path))
    except (OSError, ValueError):  # absent, a planted link or unreadable: no record, never a crash
        return None
    return value if isinstance(value, dict) else None


def record_stage(workspace_path: Path, stage: str, seconds: float, gpus: int, *,
                 started: float | None = None) -> Path:
    """Add one attempt of `stage` (`seconds` on `gpus` GPUs, started at epoch time `started`)."""
    if seconds < 0 or gpus < 0:
        raise ValueError(f"stage {stage}: seconds {seconds} and gpus {gpus} must not be negative")
    path = _stage_file(workspace_path, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    earlier = _read(path) or {}
    attempts = int(earlier.get("attempts", 0)) + 1
    gpu_seconds = float(earlier.get("gpu_seconds", 0.0)) + seconds * gpus
    return write_json(path, {
        "stage": stage,
        "seconds": round(float(earlier.get("seconds", 0.0)) + seconds, 3),
        "gpus": gpus,
        "gpu_seconds": round(gpu_seconds, 3),
        "attempts": attempts,
        "started": earlier.get("started", round(started if started is not None else now - seconds, 3)),
        "finished": round(now, 3),
    })


def read_cost(workspace_path: Path) -> dict[str, Any] | None:
    """{"stages": {stage: {"seconds", "gpus", "gpu_hours", "attempts"}}, "gpu_hours": {"training",
    "evaluation", "total"}, "wall_seconds"} from the stages recorded so far; None when none was."""
    folder = Path(workspace_path) / COST_DIR
    records = [r for p in sorted(folder.glob("*.json")) if (r := _read(p)) and isinstance(r.get("stage"), str)]
    if not records:
        return None
    # In the order the stages started (the run's order, for the report's table), unknown starts last.
    records.sort(key=lambda r: r["started"] if isinstance(r.get("started"), int | float) else float("inf"))
    stages = {r["stage"]: {"seconds": r.get("seconds", 0.0), "gpus": r.get("gpus", 0),
                           "gpu_hours": round(float(r.get("gpu_seconds", 0.0)) / 3600, 4),
                           "attempts": r.get("attempts", 1)} for r in records}

    def hours(names: tuple[str, ...] | None) -> float:
        return round(sum(s["gpu_hours"] for name, s in stages.items() if names is None or name in names), 4)

    starts = [r["started"] for r in records if isinstance(r.get("started"), int | float)]
    ends = [r["finished"] for r in records if isinstance(r.get("finished"), int | float)]
    return {
        "stages": stages,
        "gpu_hours": {"training": hours(TRAINING), "evaluation": hours(EVALUATION), "total": hours(None)},
        # First start to last finish: evaluate and evaluate_baseline overlap, so this is not their sum.
        "wall_seconds": round(max(ends) - min(starts), 3) if starts and ends else None,
    }
