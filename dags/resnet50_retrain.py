"""
### ResNet50 v1.5 monthly retrain

Keeps the ResNet50 v1.5 ImageNet classifier fresh at NVIDIA NGC quality:

1. **fetch_data**: `dvc pull` of `data.dvc` at `data_rev` into this run's workspace (or use `data_dir`), after
   removing the workspaces idle for `RN50_RETENTION_DAYS` days;
2. **validate_data**: every TFRecord checked; bad data fails the run before any GPU is spent; beside it,
   **check_changes**: when the data, code and resolved training config equal the champion's lineage, the run
   stops here (every later task skipped, the reason in its log) unless `force_retrain` is set;
3. **train**: `horovodrun -np num_gpus` on the `gpu` pool / queue, or (launcher `kubernetes`) an MPIJob of
   num_gpus / gpus_per_node workers on the cluster; a retry resumes from the checkpoint;
4. **evaluate**: top-1 / top-5 over the 50,000 validation images; beside it, **evaluate_baseline**: the same
   for the baseline model (NVIDIA's imported checkpoint when `RN50_NGC_CHECKPOINT` is set, else the published
   champion, pulled once per run; none when neither exists);
5. **check_accuracy**: the gate against the NGC floor and the live baseline measured on the same images
   (`decision.json`); then **report**: the run report (curves, accuracy against the baselines and the last
   versions, per-class accuracy, the data validation, the gate's reasons, the cost), on the default queue;
6. **publish**: an immutable version `s3://bucket/prefix/resnet50/vNNNN/` with the report as `report/` (its
   `s3://` URI in the log and in the Asset event), then `latest`; then the run's data copy is removed (its
   reports and model stay).

A scheduled run uses the defaults below (the production recipe `ngc-90e`; a deployment changes them with
the `RN50_*` environment variables). Trigger with a form to override them for one run. Data-validation
and gate failures are final; other failures retry with exponential backoff.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import Asset, Param, TriggerRule, dag, task

from pipeline import settings
from pipeline.contracts.registry import MODEL, PREFIX_PATTERN
from pipeline.gate import DEFAULT_TOLERANCE, MAX_TOLERANCE
from pipeline.recipe import PROFILES
from tasks.notify import FailureNotifier

# Per-deployment defaults, read at parse time (pipeline.settings: the environment, no DB, no heavy import).
DEFAULT_PROFILE = settings.PROFILE.get()
# "none": triggered runs only (a test or staging deployment that must not start the monthly run on unpause).
SCHEDULE = settings.SCHEDULE.get()
DEFAULT_BUCKET = settings.BUCKET.get()
DEFAULT_PREFIX = settings.PREFIX.get()
DEFAULT_NUM_GPUS = settings.NUM_GPUS.get()
DEFAULT_LAUNCHER = settings.LAUNCHER.get()
DEFAULT_GPUS_PER_NODE = settings.GPUS_PER_NODE.get()
AWS_CONN_ID = settings.AWS_CONN_ID.get()
TRAIN_TIMEOUT = timedelta(hours=settings.TRAIN_TIMEOUT_HOURS.get())
# fetch_data first removes the run workspaces unchanged for this many days (`rn50 gc`); 0 keeps them all.
# A deployment's disk policy, not a per-run choice: no trigger form should delete other runs' work.
RETENTION_DAYS = settings.RETENTION_DAYS.get()

# Downstream DAGs schedule on this Asset; each event's extra holds the published version's URI. (A name,
# not an s3:// URI: an s3 Asset makes the Amazon provider import boto3 while the DAG file parses.)
RESNET50_MODEL = Asset(name="resnet50_model")

# The trigger form's groups (a Param's `section`): the form opens on the Params without one (what to train, on
# what data) and folds each group under its title.
TRAINING, GATE, PUBLISHING, GPUS = "Training overrides", "Gate", "Where to publish", "GPUs and hosts"

FINAL = {"retries": 0}  # bad data and a failed gate do not get better on retry
GPU = {"pool": "gpu", "pool_slots": 1, "queue": "gpu"}  # evaluate: one GPU's work
# The gpu pool slots a training run reserves: its ranks on the gpu worker; none when the deployment trains
# on Kubernetes (the MPIJob's pods request their GPUs from the cluster, the task only waits). The slots are
# fixed when this file is parsed, so fetch_data and train refuse a run whose Params disagree (check_run_gpus).
TRAIN_GPU_SLOTS = DEFAULT_NUM_GPUS if DEFAULT_LAUNCHER == "local" else 0
TRAIN_SLOT = {**GPU, "pool_slots": TRAIN_GPU_SLOTS} if TRAIN_GPU_SLOTS else {}


@dag(
    dag_id=Path(__file__).stem,
    dag_display_name="ResNet50 v1.5 retrain",
    description="Monthly ResNet50 v1.5 retrain: fetch, validate, train, evaluate, gate, publish",
    doc_md=__doc__,
    schedule=None if SCHEDULE.lower() == "none" else SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["rn50", "training", "imagenet"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": FailureNotifier(),
    },
    params={
        "profile": Param(DEFAULT_PROFILE, type="string", enum=list(PROFILES), title="Profile",
                         description="Training recipe: NVIDIA's 90 or 250 epochs on ImageNet, or smoke (the sample "
                         "dataset, 32 px, minutes on a CPU)."),
        "data_rev": Param("HEAD", type="string", minLength=1, title="Data revision",
                          description="git revision of data.dvc to `dvc pull` (a commit, tag or branch)."),
        "data_dir": Param(None, type=["null", "string"], title="Data directory",
                          description="Use this TFRecord directory as it is instead of pulling data.dvc."),
        "epochs": Param(None, type=["null", "integer"], minimum=1, maximum=1000, title="Epochs",
                        description="Override the profile's epochs.", section=TRAINING),
        "steps": Param(None, type=["null", "integer"], minimum=1, title="Steps",
                       description="Stop after this many steps (the LR schedule spans them); for quick checks.",
                       section=TRAINING),
        "batch_size": Param(None, type=["null", "integer"], minimum=1, maximum=4096, title="Batch size per GPU",
                            description="Override the profile's per-GPU batch (256 in the NGC recipes).",
                            section=TRAINING),
        "amp": Param(None, type=["null", "boolean"], title="AMP",
                     description="Mixed precision (float16); empty keeps the profile's choice.", section=TRAINING),
        "xla": Param(None, type=["null", "boolean"], title="XLA",
                     description="XLA-compile the training step; empty keeps the profile's choice.", section=TRAINING),
        "init_from": Param("scratch", type="string", minLength=1, title="Initial weights",
                           description="scratch (random), ngc (NVIDIA's checkpoint, RN50_NGC_CHECKPOINT), champion "
                           "(the latest published version) or a model directory on the gpu worker. Weights only; "
                           "the finetune profile is the short recipe for a good start.", section=TRAINING),
        "force_retrain": Param(False, type="boolean", title="Force retrain",
                               description="Train even when the data, code and resolved training config equal the "
                               "champion's lineage (check_changes skips the run otherwise).", section=TRAINING),
        "gate_tolerance": Param(DEFAULT_TOLERANCE, type="number", minimum=0, maximum=MAX_TOLERANCE,
                                title="Gate tolerance (pp)",
                                description="Percentage points of top-1 below the baseline that still pass, at most "
                                f"{MAX_TOLERANCE:g}. To publish a model below that, use force_publish with a reason.",
                                section=GATE),
        "force_publish": Param(False, type="boolean", title="Force publish",
                               description="Publish even if the gate fails. Needs a reason.", section=GATE),
        "force_reason": Param(None, type=["null", "string"], title="Force reason",
                              description="Why a failing model is published anyway; recorded in the manifest.",
                              section=GATE),
        "publish": Param(True, type="boolean", title="Publish",
                         description="Publish a model that passes the gate (off: stop after the gate).",
                         section=PUBLISHING),
        "bucket": Param(DEFAULT_BUCKET, type="string", minLength=3, maxLength=63, pattern=r"^[a-z0-9][a-z0-9.-]+$",
                        title="Bucket", description="S3 bucket of the model registry.", section=PUBLISHING),
        "prefix": Param(DEFAULT_PREFIX, type="string", pattern=PREFIX_PATTERN, title="Prefix",
                        description="Key prefix inside the bucket, e.g. models or team-a/models (no leading or "
                        "trailing '/', no '.' or '..' segment). The champion is the `latest` under it.",
                        section=PUBLISHING),
        "num_gpus": Param(DEFAULT_NUM_GPUS, type="integer", minimum=1, maximum=1024, title="GPUs",
                          description="Horovod ranks: horovodrun -np num_gpus.", section=GPUS),
        "launcher": Param(DEFAULT_LAUNCHER, type="string", enum=list(settings.LAUNCHERS), title="Launcher",
                          description="local: horovodrun on the Airflow GPU worker. kubernetes: submit an MPIJob "
                          "(kubeflow mpi-operator) and wait for it.", section=GPUS),
        "gpus_per_node": Param(DEFAULT_GPUS_PER_NODE, type="integer", minimum=1, maximum=64, title="GPUs per node",
                               description="launcher=kubernetes: GPUs per worker pod; num_gpus above it must be a "
                               "multiple of it.", section=GPUS),
        "hosts": Param(None, type=["null", "string"],
                       pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*(:\d+)?(,[A-Za-z0-9][A-Za-z0-9_.-]*(:\d+)?)*$",
                       title="Hosts", description="horovodrun hosts for several machines, e.g. node1:8,node2:8. "
                       "Only hosts the deployment lists in RN50_ALLOWED_HOSTS (and localhost); others are refused.",
                       section=GPUS),
    },
)
def resnet50_retrain():
    # multiple_outputs=False: each task pushes its summary once, as `return_value` (the dict a downstream task
    # receives, and what the REST API shows), not once more key by key.
    @task(task_id="fetch_data", multiple_outputs=False, task_display_name="Fetch data (dvc pull)")
    def fetch_data(**context) -> dict:
        from tasks import fetch_data as stage
        from tasks.common import timed, workspace
        from tasks.policy import check_run_gpus, check_run_hosts

        params = context["params"]
        # A host the deployment does not allow, or GPUs other than train reserves, fail the run before any work.
        check_run_hosts(params["hosts"])
        check_run_gpus(params["num_gpus"], params["launcher"], TRAIN_GPU_SLOTS)
        with timed(workspace(context["run_id"]), "fetch_data") as ws:
            return stage.run(ws, data_rev=params["data_rev"], data_dir=params["data_dir"],
                             retention_days=RETENTION_DAYS)

    @task(task_id="validate_data", multiple_outputs=False, task_display_name="Validate data", **FINAL)
    def validate_data(data: dict, **context) -> dict:
        from tasks import validate_data as stage
        from tasks.common import timed, workspace
        from tasks.connections import s3_client

        p = context["params"]
        with timed(workspace(context["run_id"]), "validate_data") as ws:
            # The champion's data summary, from the run's registry: what this data is compared with.
            return stage.run(ws, data_dir=data["data_dir"], profile=p["profile"], client=s3_client(AWS_CONN_ID),
                             bucket=p["bucket"], prefix=p["prefix"], model=MODEL)

    # Nothing to train when the data, code and recipe equal the champion's: a short-circuit (not a failure)
    # skips every task after it, and its log and XCom say why. validate_data is not after it: it still runs.
    @task.short_circuit(task_id="check_changes", multiple_outputs=False, task_display_name="Skip if nothing changed")
    def check_changes(**context) -> dict | bool:
        from tasks import check_changes as stage
        from tasks.common import workspace
        from tasks.connections import s3_client

        return stage.run(workspace(context["run_id"]), params=context["params"], client=s3_client(AWS_CONN_ID),
                         model=MODEL, ti=context["ti"])

    @task(task_id="train", multiple_outputs=False, task_display_name="Train (Horovod)", execution_timeout=TRAIN_TIMEOUT,
          **TRAIN_SLOT)
    def train(data: dict, **context) -> dict:
        from tasks import train as stage
        from tasks.common import timed, workspace
        from tasks.connections import s3_client
        from tasks.policy import check_run_gpus

        p = context["params"]
        check_run_gpus(p["num_gpus"], p["launcher"], TRAIN_GPU_SLOTS)
        # init_from=champion: the run's snapshot of it, from the run's registry (see evaluate_baseline).
        client = s3_client(AWS_CONN_ID) if p["init_from"] == "champion" else None
        # num_gpus on either launcher: a Kubernetes MPIJob holds as many GPUs as horovodrun's ranks would.
        with timed(workspace(context["run_id"]), "train", p["num_gpus"]) as ws:
            return stage.run(
                ws, data_dir=data["data_dir"], profile=p["profile"], launcher=p["launcher"],
                gpus_per_node=p["gpus_per_node"], num_gpus=p["num_gpus"], hosts=p["hosts"], epochs=p["epochs"],
                batch_size=p["batch_size"], steps=p["steps"], amp=p["amp"], xla=p["xla"], init_from=p["init_from"],
                client=client, bucket=p["bucket"], prefix=p["prefix"],
            )

    @task(task_id="evaluate", multiple_outputs=False, task_display_name="Evaluate top-1/top-5", **GPU)
    def evaluate(data: dict, **context) -> dict:
        from tasks import evaluate as stage
        from tasks.common import timed, workspace

        with timed(workspace(context["run_id"]), "evaluate", 1) as ws:
            return stage.run(ws, data_dir=data["data_dir"])

    # The baseline the gate compares with, measured on the same data by the same code as the candidate; beside
    # evaluate, on the gpu queue (TensorFlow) with the same pool rule. The champion is pulled once per run into
    # its workspace, by this task or train (init_from=champion), whichever comes first; both use that copy.
    @task(task_id="evaluate_baseline", multiple_outputs=False, task_display_name="Evaluate the baseline", **GPU)
    def evaluate_baseline(data: dict, **context) -> dict:
        from tasks import evaluate_baseline as stage
        from tasks.common import timed, workspace
        from tasks.connections import s3_client

        p = context["params"]
        with timed(workspace(context["run_id"]), "evaluate_baseline", 1) as ws:
            return stage.run(ws, data_dir=data["data_dir"], client=s3_client(AWS_CONN_ID), bucket=p["bucket"],
                             prefix=p["prefix"], model=MODEL)

    @task(task_id="check_accuracy", multiple_outputs=False, task_display_name="Accuracy gate", **FINAL)
    def check_accuracy(**context) -> dict:
        from tasks import check_accuracy as stage
        from tasks.common import timed, workspace
        from tasks.connections import s3_client

        p = context["params"]
        with timed(workspace(context["run_id"]), "check_accuracy") as ws:
            return stage.run(
                ws, profile=p["profile"], tolerance=p["gate_tolerance"], force_publish=p["force_publish"],
                force_reason=p["force_reason"], client=s3_client(AWS_CONN_ID), bucket=p["bucket"], prefix=p["prefix"],
                model=MODEL,
            )

    # The run report for people (curves, accuracy against the baselines and the registry, per-class, data, gate,
    # cost) on the default queue: matplotlib, no TensorFlow. publish uploads it as the version's report/. It runs
    # whatever the gate said (all_done): a failed gate's report, in the run's workspace, is where its reasons are
    # read beside the curves. A short-circuit (check_changes) skips it all the same.
    @task(task_id="report", multiple_outputs=False, task_display_name="Run report", trigger_rule=TriggerRule.ALL_DONE)
    def report(**context) -> dict:
        from tasks import report as stage
        from tasks.common import timed, workspace
        from tasks.connections import s3_client

        p = context["params"]
        with timed(workspace(context["run_id"]), "report") as ws:
            return stage.run(ws, client=s3_client(AWS_CONN_ID), bucket=p["bucket"], prefix=p["prefix"], model=MODEL)

    @task(task_id="publish", multiple_outputs=False, task_display_name="Publish to S3", outlets=[RESNET50_MODEL])
    def publish(decision: dict, training: dict, **context) -> dict:
        from tasks import publish as stage
        from tasks.common import skip, workspace
        from tasks.connections import s3_client

        p = context["params"]
        if not p["publish"]:
            raise skip("publish is off for this run; the gate's decision is in " + decision["decision"])
        lineage = {"dag_id": context["dag"].dag_id, "run_id": context["run_id"], "num_gpus": training["num_gpus"],
                   "hosts": training["hosts"] or "localhost"}
        summary = stage.run(
            workspace(context["run_id"]), client=s3_client(AWS_CONN_ID), bucket=p["bucket"], prefix=p["prefix"],
            model=MODEL, run_id=context["run_id"], lineage=lineage,
        )
        context["outlet_events"][RESNET50_MODEL].extra = summary
        return summary

    # Data flows as XComArgs (fetch_data's data_dir, train's ranks and hosts for the lineage, the gate's decision);
    # the rest is order alone: each stage reads its predecessor's files in the run's workspace.
    data = fetch_data()
    trained = train(data)
    decision = check_accuracy()
    validated = validate_data(data)
    baseline = evaluate_baseline(data)
    data >> check_changes() >> [trained, baseline]  # skipping these skips everything after them too
    validated >> trained >> evaluate(data) >> decision
    validated >> baseline >> decision
    decision >> report() >> publish(decision, trained)


resnet50_retrain()
