"""Whether a run would only train the champion again: same data, same code, same resolved recipe.

A run's lineage is what its manifest will record (pipeline.publish.manifest): the dataset version
fetch_data pinned, the code version of the checkout publishing it, and the training config that
`rn50 train` resolves and saves as config.json, with the GPUs it trains on (the global batch and so
the LR depend on them). When all of it equals the champion's, retraining would spend the GPUs on the
model the registry already serves, so the DAG skips it unless the trigger forces it.

Only what identifies content counts as equal: an unknown version (None), a data directory's listing
fingerprint (paths and sizes, not bytes) and a checkout with uncommitted changes ("-dirty") never do,
and neither does a warm start from a model whose weights cannot be named before training (the champion
itself, a path). A pure function of the two lineages: the DAG's check_changes task reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.fetch import UNVERSIONED

DIRTY = "-dirty"  # code_version's mark for a checkout whose tracked files differ from its commit


@dataclass(frozen=True)
class RunLineage:
    """What a run would record: dataset and code versions, config.json's recipe, its init_from and GPUs."""

    dataset_version: str | None
    code_version: str | None
    config: Mapping[str, Any]  # TrainConfig.to_dict() of the run's resolved profile
    init_from: str = "scratch"
    num_gpus: int = 1
    ngc_checkpoint: str | None = None  # RN50_NGC_CHECKPOINT: what init_from=ngc would start from


@dataclass(frozen=True)
class ChangeCheck:
    train: bool
    reason: str  # one line, for the task log and the XCom
    champion: str | None = None  # the champion's version compared with
    differences: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"train": self.train, "reason": self.reason, "champion": self.champion,
                "differences": list(self.differences)}


def _version_problem(what: str, ours: Any, theirs: Any, unknown: Any) -> str | None:
    """Why two versions do not count as equal, or None when they do."""
    for who, value in (("this run's", ours), ("the champion's", theirs)):
        if why := unknown(value):
            return f"{what}: {who} is {why}"
    return None if ours == theirs else f"{what}: {theirs} -> {ours}"


def _dataset_unknown(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "unknown"
    if value.startswith(UNVERSIONED):
        return "a data directory's listing (paths and sizes), not a content version"
    return None


def _code_unknown(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "unknown (no git checkout and no RN50_CODE_VERSION)"
    if value.endswith(DIRTY):
        return f"{value}: uncommitted changes"
    return None


def _init_problem(run: RunLineage, init: Any) -> str | None:
    """Whether the run starts from the same weights as the champion did (config.json's `init`)."""
    theirs = init.get("kind") if isinstance(init, dict) else None
    if run.init_from == "scratch":
        return None if theirs is None else f"init: {theirs} -> scratch"
    if run.init_from == "ngc":
        if theirs == "ngc" and run.ngc_checkpoint and init.get("source") == run.ngc_checkpoint:
            return None
        return f"init: {theirs or 'scratch'} -> ngc ({run.ngc_checkpoint})"
    return f"init: init_from={run.init_from} starts from weights that are not the champion's own start"


def differences(run: RunLineage, champion: Mapping[str, Any]) -> list[str]:
    """Each way the run's lineage differs from the champion manifest's, or may (unknown versions); [] when equal."""
    found = [
        _version_problem("dataset", run.dataset_version, champion.get("dataset_version"), _dataset_unknown),
        _version_problem("code", run.code_version, champion.get("code_version"), _code_unknown),
    ]
    training = champion.get("training") if isinstance(champion.get("training"), dict) else {}
    config = training.get("config") if isinstance(training.get("config"), dict) else {}
    recipe = {k: v for k, v in config.items() if k != "init"}
    for key in sorted(set(run.config) | set(recipe)):
        if run.config.get(key, "<absent>") != recipe.get(key, "<absent>"):
            found.append(f"config.{key}: {recipe.get(key, '<absent>')!r} -> {run.config.get(key, '<absent>')!r}")
    found.append(_init_problem(run, config.get("init")))
    if training.get("num_gpus") != run.num_gpus:
        found.append(f"num_gpus: {training.get('num_gpus')!r} -> {run.num_gpus!r}")
    return [d for d in found if d]


def check_changes(run: RunLineage, champion: Mapping[str, Any] | None, *, force_retrain: bool = False) -> ChangeCheck:
    """Train, or skip because the champion already is what this run would train (unless force_retrain)."""
    if champion is None:
        return ChangeCheck(True, "no champion published yet; training")
    version = str(champion.get("version"))
    found = differences(run, champion)
    if found:
        return ChangeCheck(True, f"training: differs from the champion {version} in {'; '.join(found)}",
                           version, found)
    same = f"dataset {run.dataset_version}, code {run.code_version}, config equal"
    if force_retrain:
        return ChangeCheck(True, f"nothing changed since {version}: {same}; training anyway (force_retrain)",
                           version)
    return ChangeCheck(False, f"nothing changed since {version}: {same}; skipping training (force_retrain to "
                       "train anyway)", version)
