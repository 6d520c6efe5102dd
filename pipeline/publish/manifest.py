"""What a version says about itself: its files and their digests, how good it is, and where it came from.

The manifest is the version's contract: `pull` trusts nothing it does not list, the gate reads the
champion's `metrics.top1_accuracy` from it, and an auditor reads the lineage (the data, the code,
the recipe, the Airflow run, the hardware) without access to the machine that trained it.
Building it is a pure function; the lineage helpers below are the only I/O, and each returns None
rather than failing when its source is absent (a model trained outside git or Airflow is still
publishable, and says so).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import settings
from pipeline.files import read_regular
from pipeline.publish.hashing import FileDigest
from pipeline.train.config import TRAINER

FORMAT = "rn50-model-manifest/1"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def dataset_version(data_dvc: Path) -> str | None:
    """The md5 DVC pins the dataset with (`outs[0].md5` of data.dvc)."""
    import yaml

    try:
        outs = yaml.safe_load(Path(data_dvc).read_text()).get("outs") or []
    except (OSError, AttributeError, yaml.YAMLError):
        return None
    return outs[0].get("md5") if outs and isinstance(outs[0], dict) else None


def code_version(repo: Path) -> str | None:
    """`git rev-parse HEAD`, with "-dirty" when tracked files differ from it; outside git, RN50_CODE_VERSION.

    None when neither says. Git wins where there is a checkout: it is the code that runs, uncommitted
    edits included ("-dirty"), which a variable cannot know of, so a stale RN50_CODE_VERSION in a
    developer's shell never makes a modified checkout look like a clean commit (check_changes would skip
    on it). An image installs the code without .git: there the commit it was built from, passed in at
    build time (docker/), is the only witness.
    """
    declared = settings.CODE_VERSION.get()  # read first: a malformed value is refused even beside git

    def git(*args: str) -> subprocess.CompletedProcess:
        # --no-optional-locks: a status must not take the index lock of a checkout others work in.
        return subprocess.run(["git", "--no-optional-locks", "-C", str(repo), *args], capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)

    try:
        head = git("rev-parse", "--verify", "HEAD")
        if head.returncode != 0:
            return declared
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return declared
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def trainer_image(environ: Mapping[str, str] = os.environ) -> str | None:
    """The image this process runs in, as the deployment says: RN50_TRAINER_IMAGE where it is set (the MPIJob
    puts it in its pods, docker/compose.yaml in its workers), else None (a checkout, or an install outside an
    image). The setting's default names the MPIJob's image, not this process's, so it does not count here."""
    if not environ.get(settings.TRAINER_IMAGE.name, "").strip():
        return None
    return settings.TRAINER_IMAGE.get(environ)


def trainer_record(environ: Mapping[str, str] = os.environ) -> dict[str, str | None]:
    """What `rn50 train` records of itself in config.json (pipeline.train.config.TRAINER): the code version
    of the code that trains (code_version: git, or the image's RN50_CODE_VERSION) and the image it runs in."""
    return {"code_version": code_version(PROJECT_ROOT), "image": trainer_image(environ)}


def trained_by(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """config.json's trainer record, or None when it has none (trained before `rn50 train` recorded it, or a
    model `rn50 import-ngc` wrote)."""
    record = (config or {}).get(TRAINER)
    return record if isinstance(record, dict) else None


def airflow_ids(env: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """The DAG and run that published, from the context Airflow exports to its tasks."""
    ids = {"dag_id": env.get("AIRFLOW_CTX_DAG_ID"), "run_id": env.get("AIRFLOW_CTX_DAG_RUN_ID")}
    return ids if any(ids.values()) else None


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(read_regular(path))  # a symlink planted in a model directory is refused
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return value


def build_manifest(
    *,
    model: str,
    version: str,
    uri: str,
    created_at: str,
    run_id: str,
    files: Mapping[str, FileDigest],
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
