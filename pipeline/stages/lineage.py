"""Whether a run would only train the champion again: same data, same code, same resolved recipe.

A run's lineage is what its manifest will record (pipeline.contracts.manifest): the dataset version
fetch_data pinned, the trainer (the code that trains), and the training config that `rn50 train`
resolves and saves as config.json, with the GPUs it trains on (the global batch and so the LR depend
on them). When all of it equals the champion's, retraining would spend the GPUs on the model the
registry already serves, so the DAG skips it unless the trigger forces it.

The trainer is the code `rn50 train` runs, which need not be this worker's: the MPIJob's pods, and the
gpu worker of docker/compose.yaml, run the trainer image (RN50_TRAINER_IMAGE), built on its own.
`rn50 train` records it in config.json (`trainer`: its code version, and the image it runs in when
RN50_TRAINER_IMAGE is set in its environment), and the manifest's code_version is that record's. The
champion's trainer is its config.json's record; the run's is named before it trains (`expected_trainer`):

- launcher=kubernetes: the image RN50_TRAINER_IMAGE names (its default too: the pods run it). The code
  inside it cannot be read before it runs, so the reference stands for it; no code version is compared.
- launcher=local: this deployment's code version (this checkout's commit, or the image's
  RN50_CODE_VERSION: compose builds both images from one), and the image when RN50_TRAINER_IMAGE is set
  (the gpu worker runs it); both are compared.

A trainer in an image and one outside any image always differ. An image reference counts as a version only
when it pins one, a tag other than `latest` or a digest (`@sha256:`); `latest`, or no tag, names whatever
was pushed last. A tag pushed again with other code looks the same as before: give each build its own tag
(the trainer image's code version, say) or pin it by digest.

Only what identifies content counts as equal: an unknown version (None), a data directory's listing
fingerprint (paths and sizes, not bytes), a checkout with uncommitted changes ("-dirty") and a moving
image tag never do, and neither does a warm start from a model whose weights cannot be named before
training (the champion itself, a path). A pure function of the two lineages (`expected_trainer` and
`run_lineage` apart, which read the settings, git and NVIDIA's checkpoint): the DAG's check_changes task
reads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import provenance, settings
from pipeline.contracts.config import TRAINER
from pipeline.errors import Refused
from pipeline.fetch import UNVERSIONED
from pipeline.provenance import DIRTY
from pipeline.publish.publish import resolve_lineage
from pipeline.recipe import resolve
from pipeline.stages import ngc_source


@dataclass(frozen=True)
class RunLineage:
    """What a run would record: dataset version, trainer, config.json's recipe, its init_from and GPUs."""

    dataset_version: str | None
    code_version: str | None  # the trainer's, where known before training (None with launcher=kubernetes)
    config: Mapping[str, Any]  # TrainConfig.to_dict() of the run's resolved profile
    init_from: str = "scratch"
    num_gpus: int = 1
    ngc_checkpoint: str | None = None  # RN50_NGC_CHECKPOINT: what init_from=ngc would start from
    # What that checkpoint is by content (pipeline.stages.ngc_source.identity); None when it could not be
    # named, and ngc_unknown says why.
    ngc_identity: Mapping[str, Any] | None = None
    ngc_unknown: str | None = None
    trainer_image: str | None = None  # the image the trainer will run in; None: this deployment's code, no image


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


def _image_unknown(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "unknown"
    if "@" in value:  # name@sha256:...: the content itself
        return None
    tag = value.rsplit("/", 1)[-1].partition(":")[2]  # the last part: a registry's host:port is no tag
    if not tag or tag == "latest":
        return f"{value}: a moving tag, not a version (tag each build, or pin @sha256:)"
    return None


def expected_trainer(launcher: str, environ: Mapping[str, str] = os.environ) -> tuple[str | None, str | None]:
    """(code version, image) of the trainer a run with this launcher will have, as far as it can be known
    before it trains (the module docstring's rule). A malformed setting raises SettingError."""
    if launcher == "kubernetes":
        return None, settings.TRAINER_IMAGE.get(environ)
    return provenance.code_version(settings.PROJECT_ROOT), provenance.trainer_image(environ)


def run_lineage(*, profile: str, overrides: Mapping[str, Any], init_from: str, num_gpus: int, launcher: str,
                dataset_version: str | None, data_dvc: Path) -> RunLineage:
    """This run's lineage, named before it trains: the recipe resolved with the run's overrides, the dataset
    version as publish will resolve it (fetch_data's, else the run's data.dvc), the trainer it will have and,
    for init_from=ngc, NVIDIA's checkpoint by content. A recipe or a setting that does not parse is Refused."""
    try:
        config = resolve(profile, **overrides).to_dict()
    except ValueError as exc:
        raise Refused(str(exc)) from exc
    known = resolve_lineage({"dataset_version": dataset_version}, code_repo=settings.PROJECT_ROOT, data_dvc=data_dvc)
    try:
        code, image = expected_trainer(launcher)
    except settings.SettingError as exc:  # a malformed RN50_CODE_VERSION or image: a retry would not fix it
        raise Refused(str(exc)) from exc
    ngc = settings.NGC_CHECKPOINT.get()
    ngc_identity, ngc_unknown = None, f"{settings.NGC_CHECKPOINT.name} is not set"
    if init_from == "ngc" and ngc:
        # By content, as the import cache names it (S3: one listing; a path: its files hashed); a checkpoint
        # that cannot be named here (unreachable, gone) is not the champion's start: the run trains.
        try:
            ngc_identity, ngc_unknown = ngc_source.identity(ngc), None
        except ngc_source.NgcSourceError as exc:
            ngc_unknown = str(exc)
    return RunLineage(
        dataset_version=known["dataset_version"], code_version=code, config=config, init_from=init_from,
        num_gpus=num_gpus, ngc_checkpoint=ngc, ngc_identity=ngc_identity, ngc_unknown=ngc_unknown,
        trainer_image=image,
    )


def _trainer_problems(run: RunLineage, trainer: Any) -> list[str | None]:
    """Whether the run trains with the code that trained the champion (its config.json's trainer record)."""
    if not isinstance(trainer, dict):
        return ["code: the champion's is unknown (its config.json records no trainer: trained before rn50 train "
                "recorded it)"]
    ours, theirs = run.trainer_image, trainer.get("image")
    if theirs is not None and ours is None:
        return [f"trainer: image {theirs} -> code {run.code_version} (no image)"]
    if ours is not None and theirs is None:
        return [f"trainer: code {trainer.get('code_version')} (no image) -> image {ours}"]
    found = []
    if ours is not None:
        found.append(_version_problem("trainer image", ours, theirs, _image_unknown))
    if ours is None or run.code_version is not None:  # this deployment's code: known before training
        found.append(_version_problem("code", run.code_version, trainer.get("code_version"), _code_unknown))
    return found


def _trainer_text(run: RunLineage) -> str:
    """The run's trainer as the reason line names it."""
    parts = [f"code {run.code_version}"] if run.trainer_image is None or run.code_version is not None else []
    return ", ".join(parts + ([f"trainer image {run.trainer_image}"] if run.trainer_image else []))


def _init_problem(run: RunLineage, init: Any) -> str | None:
    """Whether the run starts from the same weights as the champion did (config.json's `init`)."""
    theirs = init.get("kind") if isinstance(init, dict) else None
    if run.init_from == "scratch":
        return None if theirs is None else f"init: {theirs} -> scratch"
    if run.init_from == "ngc":
        # NVIDIA's checkpoint is the same start only by content: one replaced at the same path or URI is
        # another, so the identity config.json's `init` recorded is compared, never RN50_NGC_CHECKPOINT.
        where = f"ngc ({run.ngc_checkpoint})"
        if theirs != "ngc":
            return f"init: {theirs or 'scratch'} -> {where}"
        if run.ngc_identity is None:
            return f"init: {where}: this run's checkpoint cannot be identified ({run.ngc_unknown or 'unknown'})"
        recorded = init.get("identity")
        if not isinstance(recorded, dict):
            return (f"init: {where}: the champion's config.json names its checkpoint by path only (imported before "
                    "checkpoints were identified by content)")
        if recorded != dict(run.ngc_identity):
            change = _content_change(recorded, run.ngc_identity)
            return f"init: {where}: not the checkpoint the champion started from ({change})"
        return None
    return f"init: init_from={run.init_from} starts from weights that are not the champion's own start"


def _content_change(theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> str:
    """Which files of two checkpoint identities (ngc_source.identity) differ, in a few words."""
    kinds = {"objects": "S3 objects", "sha256": "local files"}
    kind_theirs, kind_ours = next(iter(theirs), None), next(iter(ours), None)
    if kind_theirs != kind_ours:
        return f"{kinds.get(str(kind_theirs), kind_theirs)} -> {kinds.get(str(kind_ours), kind_ours)}"
    a, b = theirs.get(kind_theirs), ours.get(kind_ours)
    if not isinstance(a, dict) or not isinstance(b, dict):
        return "the champion's record is not an identity"
    changed = [f"{name} {'gone' if name not in b else 'new' if name not in a else 'changed'}"
               for name in sorted(set(a) | set(b)) if a.get(name) != b.get(name)]
    return ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")


def differences(run: RunLineage, champion: Mapping[str, Any]) -> list[str]:
    """Each way the run's lineage differs from the champion manifest's, or may (unknown versions); [] when equal."""
    found = [
        _version_problem("dataset", run.dataset_version, champion.get("dataset_version"), _dataset_unknown),
    ]
    training = champion.get("training") if isinstance(champion.get("training"), dict) else {}
    config = training.get("config") if isinstance(training.get("config"), dict) else {}
    # The code that trained the champion is its config.json's record, not the manifest's top level (before
    # the record existed, that was the publishing worker's code).
    found += _trainer_problems(run, config.get(TRAINER))
    recipe = {k: v for k, v in config.items() if k not in ("init", TRAINER)}
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
    same = f"dataset {run.dataset_version}, {_trainer_text(run)}, config equal"
    if force_retrain:
        return ChangeCheck(True, f"nothing changed since {version}: {same}; training anyway (force_retrain)",
                           version)
    return ChangeCheck(False, f"nothing changed since {version}: {same}; skipping training (force_retrain to "
                       "train anyway)", version)
