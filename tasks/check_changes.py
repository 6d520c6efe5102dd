"""check_changes: skip training when the run's data, code and resolved recipe equal the champion's lineage.

On the default queue (no TensorFlow): the run's lineage is named before it trains (the dataset version
fetch_data recorded, the trainer the run will have, the recipe its Params resolve:
pipeline.stages.lineage.run_lineage) and compared with the champion's manifest and its config.json's
trainer record (pipeline.stages.lineage.check_changes). Unless the trigger sets force_retrain, an
unchanged run short-circuits: the DAG skips training, evaluation, the gate and publishing, and this
task's log and XCom say why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.contracts.names import DATA_DVC
from pipeline.contracts.registry import MODEL
from pipeline.workspace import RunWorkspace
from tasks.common import data_record, final_failures

# The DAG's Params that override the profile's TrainConfig fields: what the train task passes to `rn50 train`.
OVERRIDES = ("epochs", "steps", "batch_size", "amp", "xla")


def run(ws: RunWorkspace, *, params: Mapping[str, Any], client: Any, model: str = MODEL,
        ti: Any = None) -> dict[str, Any] | bool:
    """The comparison's summary when the run trains; False (the short-circuit) when it skips.

    A skipping short-circuit pushes no return value (Airflow skips the downstream tasks first), so the
    summary is pushed to `ti`'s XCom here, where the UI shows it.
    """
    from pipeline.publish.registry import latest_manifest
    from pipeline.stages.lineage import check_changes, run_lineage

    with final_failures():
        lineage = run_lineage(
            profile=params["profile"], overrides={k: params[k] for k in OVERRIDES}, init_from=params["init_from"],
            num_gpus=params["num_gpus"], launcher=params["launcher"],
            dataset_version=(data_record(ws) or {}).get("dataset_version"), data_dvc=ws.checkout / DATA_DVC)
    with final_failures(ValueError):  # a prefix that is no key path
        champion = latest_manifest(client, params["bucket"], params["prefix"], model)
    check = check_changes(lineage, champion, force_retrain=bool(params.get("force_retrain")))
    print(check.reason, flush=True)
    summary = {**check.to_dict(), "dataset_version": lineage.dataset_version,
               "code_version": lineage.code_version, "trainer_image": lineage.trainer_image}
    if check.train:
        return summary
    if ti is not None:
        ti.xcom_push(key="return_value", value=summary)
    return False
