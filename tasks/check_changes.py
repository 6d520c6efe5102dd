"""check_changes: skip training when the run's data, code and resolved recipe equal the champion's lineage.

On the default queue (no TensorFlow): it reads the dataset version fetch_data recorded (as publish
resolves it, pipeline.publish.publish.resolve_lineage), names the trainer the run will have (the trainer
image on Kubernetes, this deployment's code locally: pipeline.stages.lineage.expected_trainer) and compares
them with the champion's manifest and its config.json's trainer record (pipeline.stages.lineage). Unless
the trigger sets force_retrain, an unchanged run short-circuits: the DAG skips training, evaluation, the
gate and publishing, and this task's log and XCom say why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline import settings
from pipeline.contracts.names import DATA_DVC
from pipeline.contracts.registry import MODEL
from pipeline.workspace import RunWorkspace
from tasks.common import data_record, final

# The DAG's Params that override the profile's TrainConfig fields: what the train task passes to `rn50 train`.
OVERRIDES = ("epochs", "steps", "batch_size", "amp", "xla")


def run(ws: RunWorkspace, *, params: Mapping[str, Any], client: Any, model: str = MODEL,
        ti: Any = None) -> dict[str, Any] | bool:
    """The comparison's summary when the run trains; False (the short-circuit) when it skips.

    A skipping short-circuit pushes no return value (Airflow skips the downstream tasks first), so the
    summary is pushed to `ti`'s XCom here, where the UI shows it.
    """
    from pipeline.publish.publish import resolve_lineage
    from pipeline.publish.registry import latest_manifest
    from pipeline.recipe import resolve
    from pipeline.settings import PROJECT_ROOT
    from pipeline.stages.lineage import RunLineage, check_changes, expected_trainer

    try:
        config = resolve(params["profile"], **{k: params[k] for k in OVERRIDES}).to_dict()
    except ValueError as exc:
        raise final(exc) from exc
    data = data_record(ws) or {}
    # As publish resolves it: fetch_data's record, else the run's data.dvc.
    known = resolve_lineage({"dataset_version": data.get("dataset_version")}, code_repo=PROJECT_ROOT,
                            data_dvc=ws.checkout / DATA_DVC)
    try:
        code, image = expected_trainer(params["launcher"])
    except settings.SettingError as exc:  # a malformed RN50_CODE_VERSION or image: a retry would not fix it
        raise final(exc) from exc
    ngc = settings.NGC_CHECKPOINT.get()
    ngc_identity, ngc_unknown = None, f"{settings.NGC_CHECKPOINT.name} is not set"
    if params["init_from"] == "ngc" and ngc:
        # By content, as the import cache names it (S3: one listing; a path: its files hashed); a checkpoint
        # that cannot be named here (unreachable, gone) is not the champion's start: the run trains.
        from pipeline.stages.ngc_source import NgcSourceError, identity

        try:
            ngc_identity, ngc_unknown = identity(ngc), None
        except NgcSourceError as exc:
            ngc_unknown = str(exc)
    run_lineage = RunLineage(
        dataset_version=known["dataset_version"], code_version=code, config=config,
        init_from=params["init_from"], num_gpus=params["num_gpus"], ngc_checkpoint=ngc,
        ngc_identity=ngc_identity, ngc_unknown=ngc_unknown, trainer_image=image,
    )
    try:
        champion = latest_manifest(client, params["bucket"], params["prefix"], model)
    except ValueError as exc:  # a prefix that is no key path
        raise final(exc) from exc
    check = check_changes(run_lineage, champion, force_retrain=bool(params.get("force_retrain")))
    print(check.reason, flush=True)
    summary = {**check.to_dict(), "dataset_version": run_lineage.dataset_version,
               "code_version": run_lineage.code_version, "trainer_image": run_lineage.trainer_image}
    if check.train:
        return summary
    if ti is not None:
        ti.xcom_push(key="return_value", value=summary)
    return False
