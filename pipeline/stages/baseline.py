"""A run's baseline model, measured like the candidate: the gate compares both on the same data.

The baseline is NVIDIA's imported checkpoint when RN50_NGC_CHECKPOINT is set (the cache warm start
imports it into, pipeline.train.warm_start), else the champion: the registry's `latest`, pulled once per
run into the run's workspace (`snapshot_champion`), so that a fine-tune from the champion and the
baseline evaluation see the same version even if `latest` moves during the run. With neither, there is
no baseline, and the record says why.

A baseline's folder holds eval.json (pipeline.train.evaluate's, the candidate's code) and baseline.json,
the model's identity: {"kind": "ngc", "source", "sha256", "identity"} (warm_start's record; its checkpoint by
content, pipeline.stages.ngc_source), {"kind": "champion", "version", "uri"}, or
{"kind": "none", "reason"}. Nothing here imports TensorFlow until a model is evaluated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import settings
from pipeline.contracts.baseline import model_identity, none_record
from pipeline.contracts.names import BASELINE_FILE, MANIFEST
from pipeline.contracts.registry import MODEL, model_prefix
from pipeline.files import write_json
from pipeline.gate import champion_from_manifest
from pipeline.publish.pull import pull_version
from pipeline.publish.registry import latest_manifest
from pipeline.publish.store import Store
from pipeline.stages.init_source import InitFrom


class BaselineError(RuntimeError):
    """The baseline exists but cannot be read (S3 down, a tampered version): worth a retry, never a pass."""


def registry_uri(bucket: str, prefix: str, model: str = MODEL) -> str:
    return f"s3://{bucket}/{model_prefix(prefix, model)}"


def snapshot_champion(dest: Path, client: Any, bucket: str, prefix: str = settings.PREFIX.default,
                      model: str = MODEL) -> Path | None:
    """The run's copy of the champion in dest: pulled (verified, atomically) on the first call, reused after.

    None when nothing is published under bucket/prefix. Two tasks may pull at once: the first rename
    wins and the other uses its copy. Registry and integrity errors raise BaselineError in one line.
    """
    dest = Path(dest)
    if (dest / MANIFEST).is_file():
        return dest
    where = registry_uri(bucket, prefix, model)
    try:
        latest = latest_manifest(client, bucket, prefix, model)
        if latest is None:
            return None
        pull_version(client, bucket, dest, prefix=prefix, model=model, version=latest["version"])
    except OSError:
        if (dest / MANIFEST).is_file():  # another task's pull finished first: the same run's snapshot
            return dest
        raise
    except Exception as exc:  # StoreError, RegistryError, IntegrityError: one line, retried by Airflow
        raise BaselineError(f"the champion under {where}: {' '.join(str(exc).split())}") from None
    return dest


def find_baseline(champion_dir: Path, *, client: Any, bucket: str, prefix: str, workspace_root: Path,
                  model: str = MODEL) -> tuple[Path | None, dict[str, Any]]:
    """(the baseline's model directory, its identity): NGC's import when RN50_NGC_CHECKPOINT is set, else the
    champion's snapshot in champion_dir; (None, {"kind": "none", "reason"}) when there is neither."""
    if settings.NGC_CHECKPOINT.get():
        with InitFrom("ngc", workspace_root=workspace_root).model_dir() as (folder, record):
            return folder, record  # the cache outlives the context: nothing to clean up
    folder = snapshot_champion(champion_dir, client, bucket, prefix, model)
    if folder is None:
        reason = (f"{settings.NGC_CHECKPOINT.name} is not set and nothing is published under "
                  f"{registry_uri(bucket, prefix, model)}")
        return None, none_record(reason)
    return folder, model_identity(folder) or {"kind": "champion"}


def evaluate_baseline(data_dir: Path, out_dir: Path, champion_dir: Path, *, client: Any, bucket: str, prefix: str,
                      workspace_root: Path, model: str = MODEL, dataset_version: str | None = None) -> dict[str, Any]:
    """Evaluate the run's baseline on data_dir into out_dir (eval.json, then baseline.json); the record.
    `dataset_version` (fetch_data's) goes into eval.json's data, as the candidate's evaluate records it."""
    folder, identity = find_baseline(champion_dir, client=client, bucket=bucket, prefix=prefix,
                                     workspace_root=workspace_root, model=model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    if folder is not None:
        from dataclasses import asdict

        from pipeline.train.evaluate import evaluate, write_eval  # TensorFlow: not on the default queue

        measured = evaluate(data_dir, folder, dataset_version=dataset_version)
        write_eval(measured, out_dir)
        result = asdict(measured)
    write_json(out_dir / BASELINE_FILE, identity)  # last: the gate reads a baseline only once it is whole
    return {"model": identity, **result}


def read_champion(client: Any, bucket: str, prefix: str, model: str) -> tuple[dict[str, Any] | None, str]:
    """(the champion, the registry location it was looked for in): the manifest `latest` names, if any.
    Recorded in decision.json (and so in the next manifest); never a threshold."""
    store = Store(client, bucket)
    return champion_from_manifest(latest_manifest(store, bucket, prefix, model)), store.uri(model_prefix(prefix, model))
