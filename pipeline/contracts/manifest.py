"""manifest.json, what a version says about itself: its files and their digests, how good it is, and where
it came from. Written last by publish; `pull` trusts nothing it does not list, the gate reads the champion's
`metrics.top1_accuracy` from it, and an auditor reads the lineage (the data, the code, the recipe, the
Airflow run, the hardware) without access to the machine that trained it.

Its JSON schema is manifest.schema.json beside this module (`schema()`); building it is a pure function.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any, Protocol

FORMAT = "rn50-model-manifest/1"
SCHEMA_FILE = "manifest.schema.json"


class FileEntry(Protocol):
    """A file's digests, as pipeline.publish.hashing.FileDigest has them."""

    size: int
    sha256: str
    md5: str | None


def build_manifest(
    *,
    model: str,
    version: str,
    uri: str,
    created_at: str,
    run_id: str,
    files: Mapping[str, FileEntry],
    evaluation: dict[str, Any],
    decision: dict[str, Any],
    config: dict[str, Any],
    lineage: dict[str, Any],
    dvc: dict[str, Any] | None,
    supersedes: str | None = None,
    cost: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest as a JSON-able dict. `lineage` holds what the caller knows (already resolved); `cost` is
    the run's wall time per stage and GPU-hours (pipeline.cost), None when no DAG run recorded them."""
    known = {"dataset_version", "code_version", "dag_id", "run_id", "hosts", "num_gpus"}
    airflow = {k: lineage.get(k) for k in ("dag_id", "run_id")}
    return {
        "format": FORMAT,
        "model": model,
        "version": version,
        "uri": uri,
        "created_at": created_at,
        "run_id": run_id,
        "supersedes": supersedes,  # the version this run published before, with other files (a re-run task)
        "files": {
            name: {"size": d.size, "sha256": d.sha256, **({"md5": d.md5} if d.md5 else {})}
            for name, d in sorted(files.items())
        },
        "metrics": evaluation,
        "verdict": decision.get("verdict"),
        "force_publish": bool(decision.get("force_publish")),
        "force_reason": decision.get("force_reason"),
        "baseline": decision.get("baseline"),
        "gate": {k: decision.get(k) for k in ("profile", "thresholds", "reasons", "candidate", "live_baseline",
                                              "champion", "registry", "decided_at")},
        "dataset_version": lineage.get("dataset_version"),
        "code_version": lineage.get("code_version"),
        "training": {"config": config, "hosts": lineage.get("hosts"), "num_gpus": lineage.get("num_gpus")},
        "airflow": airflow if any(airflow.values()) else None,
        "dvc": dvc,
        "cost": cost,
        "lineage": {k: v for k, v in lineage.items() if k not in known} or None,
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()


def schema() -> dict[str, Any]:
    """The manifest's JSON schema (draft 2020-12), for consumers that check a manifest before trusting it."""
    return json.loads(resources.files(__package__).joinpath(SCHEMA_FILE).read_text())
