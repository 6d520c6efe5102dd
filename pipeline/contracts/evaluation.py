"""eval.json, what `rn50 evaluate` writes of a model measured on a validation split, and the pure helpers
that read it.

{"top1_accuracy", "top5_accuracy" (percent), "eval_count", "step", "eval_throughput", ..., EVAL_DATA, PER_CLASS}
"""

from __future__ import annotations

import re
from typing import Any

PER_CLASS = "per_class"  # eval.json's per-class counts (2 x 1000 numbers): for the run report only
# eval.json's record of the data it scored: pipeline.data.input.split_identity of the validation split (its
# digest "sha256", "shards", "records", "bytes") and "dataset_version", fetch_data's when known (else None).
EVAL_DATA = "data"


def data_digest(data: Any) -> str | None:
    """The digest that identifies the scored data in an eval.json's EVAL_DATA (a sha256 in hex), or None when
    it names none."""
    digest = data.get("sha256") if isinstance(data, dict) else None
    return digest if isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest) else None


def data_name(data: dict[str, Any]) -> str:
    """An eval.json's data as a reason line names it: 'validation 1a2b... (500 records in 2 shards, dataset md5)';
    a value that could break the line (or forge another) is left out."""
    version = data.get("dataset_version")
    known = isinstance(version, str) and re.fullmatch(r"[0-9A-Za-z.:_+-]{1,80}", version)
    counts = [int(data[k]) if isinstance(data.get(k), int) else "?" for k in ("records", "shards")]
    return (f"validation {data_digest(data)[:16]} ({counts[0]} records in {counts[1]} shards"
            + (f", dataset {version})" if known else ")"))


def eval_summary(evaluation: dict[str, Any]) -> dict[str, Any]:
    """eval.json without its per-class lists: what a decision, a manifest or a task's XCom carries."""
    return {k: v for k, v in evaluation.items() if k != PER_CLASS}

