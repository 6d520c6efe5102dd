"""Where a model came from, as this process can tell: the code (git, or the image's RN50_CODE_VERSION), the
image it runs in, the dataset's DVC pin and the Airflow run. Each helper returns None rather than failing
when its source is absent (a model trained outside git or Airflow is still publishable, and says so).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from pipeline import settings

DIRTY = "-dirty"  # code_version's mark for a checkout whose tracked files differ from its commit


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
    return head.stdout.strip() + (DIRTY if dirty.stdout.strip() else "")


def trainer_image(environ: Mapping[str, str] = os.environ) -> str | None:
    """The image this process runs in, as the deployment says: RN50_TRAINER_IMAGE where it is set (the MPIJob
    puts it in its pods, docker/compose.yaml in its workers), else None (a checkout, or an install outside an
    image). The setting's default names the MPIJob's image, not this process's, so it does not count here."""
    if not environ.get(settings.TRAINER_IMAGE.name, "").strip():
        return None
    return settings.TRAINER_IMAGE.get(environ)


def trainer_record(environ: Mapping[str, str] = os.environ) -> dict[str, str | None]:
    """What `rn50 train` records of itself in config.json (pipeline.contracts.config.TRAINER): the code version
    of the code that trains (code_version: git, or the image's RN50_CODE_VERSION) and the image it runs in."""
    return {"code_version": code_version(settings.PROJECT_ROOT), "image": trainer_image(environ)}


def airflow_ids(env: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """The DAG and run that published, from the context Airflow exports to its tasks."""
    ids = {"dag_id": env.get("AIRFLOW_CTX_DAG_ID"), "run_id": env.get("AIRFLOW_CTX_DAG_RUN_ID")}
    return ids if any(ids.values()) else None
