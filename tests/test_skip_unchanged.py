"""No retraining when nothing changed: the comparison of a run's lineage with the champion's (pipeline.stages.lineage),
and the DAG's check_changes short-circuit run against a champion published to the S3 server."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pipeline.provenance import code_version as REAL_CODE_VERSION
from pipeline.recipe import get_profile
from pipeline.stages.lineage import RunLineage, check_changes, differences

MD5 = "3f2a9c1e5d7b40a8b1c2d3e4f5a6b7c8"
SHA = "0123456789abcdef0123456789abcdef01234567"
SMOKE = get_profile("smoke").to_dict()
IMAGE = "registry.example.com/rn50-trainer:1.0"
# config.json's record of the code that trained (rn50 train writes it): from a checkout, no image.
LOCAL = {"code_version": SHA, "image": None}
# NVIDIA's checkpoint by content (pipeline.stages.ngc_source.identity), and the same path after it was replaced.
NGC_V1 = {"sha256": {"checkpoint": "1" * 64, "ckpt.index": "2" * 64, "ckpt.data-00000-of-00001": "3" * 64}}
NGC_V2 = {"sha256": {"checkpoint": "1" * 64, "ckpt.index": "4" * 64}}


def recipe(trainer: dict | None = LOCAL, **fields) -> dict:
    """config.json as `rn50 train` leaves it: the smoke recipe, and the trainer that trained it."""
    return {**SMOKE, **fields, **({"trainer": trainer} if trainer is not None else {})}


def champion(trainer: dict | None = LOCAL, **overrides) -> dict:
    manifest = {"version": "v0003", "dataset_version": MD5, "code_version": (trainer or {}).get("code_version"),
                "training": {"config": recipe(trainer), "num_gpus": 1, "hosts": "localhost"}}
    return {**manifest, **overrides}


def lineage(**overrides) -> RunLineage:
    return RunLineage(**{"dataset_version": MD5, "code_version": SHA, "config": SMOKE, **overrides})


def test_an_unchanged_run_skips_and_says_why():
    check = check_changes(lineage(), champion())
    assert (check.train, check.champion, check.differences) == (False, "v0003", [])
    assert check.reason == (f"nothing changed since v0003: dataset {MD5}, code {SHA}, config equal; skipping "
                            "training (force_retrain to train anyway)")


def test_force_retrain_trains_an_unchanged_run():
    check = check_changes(lineage(), champion(), force_retrain=True)
    assert check.train and check.reason.endswith("; training anyway (force_retrain)")


def test_no_champion_trains():
    assert check_changes(lineage(), None) == check_changes(lineage(), None, force_retrain=True)
    assert check_changes(lineage(), None).train


@pytest.mark.parametrize(("run", "manifest", "difference"), [
    (lineage(dataset_version="9" * 32), champion(), f"dataset: {MD5} -> {'9' * 32}"),
    (lineage(code_version="f" * 40), champion(), f"code: {SHA} -> {'f' * 40}"),
    (lineage(config={**SMOKE, "epochs": 21}), champion(), "config.epochs: 20 -> 21"),
    (lineage(config={**SMOKE, "amp": True}), champion(), "config.amp: False -> True"),
    # A champion trained by code whose recipe had a field this one lacks (or the reverse) is not this recipe.
    (lineage(), champion(training={"config": recipe(dropout=0.1), "num_gpus": 1}),
     "config.dropout: 0.1 -> '<absent>'"),
    (lineage(num_gpus=2), champion(), "num_gpus: 1 -> 2"),
    (lineage(), champion(training={"config": recipe(init={"kind": "ngc", "source": "/ngc"}), "num_gpus": 1}),
     "init: ngc -> scratch"),
    # NVIDIA's checkpoint replaced at the same path: the same RN50_NGC_CHECKPOINT, another start.
    (lineage(init_from="ngc", ngc_checkpoint="/ngc", ngc_identity=NGC_V2), champion(training={"config": recipe(
        init={"kind": "ngc", "source": "/ngc", "identity": NGC_V1}), "num_gpus": 1}),
     "init: ngc (/ngc): not the checkpoint the champion started from (ckpt.data-00000-of-00001 gone, ckpt.index "
     "changed)"),
    (lineage(init_from="ngc", ngc_checkpoint="/ngc", ngc_identity=NGC_V1),
     champion(training={"config": recipe(init={"kind": "ngc", "source": "/ngc"}), "num_gpus": 1}),
     "init: ngc (/ngc): the champion's config.json names its checkpoint by path only (imported before "
     "checkpoints were identified by content)"),
    (lineage(init_from="ngc", ngc_checkpoint="/ngc", ngc_unknown="RN50_NGC_CHECKPOINT=/ngc: no such checkpoint"),
     champion(training={"config": recipe(init={"kind": "ngc", "source": "/ngc", "identity": NGC_V1}), "num_gpus": 1}),
     "init: ngc (/ngc): this run's checkpoint cannot be identified (RN50_NGC_CHECKPOINT=/ngc: no such checkpoint)"),
    # Fine-tuning from the champion starts from the champion itself: never the champion's own start.
    (lineage(init_from="champion"), champion(),
     "init: init_from=champion starts from weights that are not the champion's own start"),
])
def test_any_one_difference_trains_and_is_named(run, manifest, difference):
    check = check_changes(run, manifest, force_retrain=False)
    assert check.train and check.differences == [difference]
    assert check.reason == f"training: differs from the champion v0003 in {difference}"


def test_the_same_ngc_checkpoint_is_the_same_start():
    init = {"kind": "ngc", "source": "/ngc", "identity": NGC_V1}
    manifest = champion(training={"config": recipe(init=init), "num_gpus": 1})
    assert differences(lineage(init_from="ngc", ngc_checkpoint="/ngc", ngc_identity=NGC_V1), manifest) == []
    # By content: the same files moved to another path are the same start.
    assert differences(lineage(init_from="ngc", ngc_checkpoint="/moved", ngc_identity=NGC_V1), manifest) == []


@pytest.mark.parametrize(("ours", "theirs", "difference"), [
    ({"dataset_version": None}, {}, "dataset: this run's is unknown"),
    ({}, {"dataset_version": None}, "dataset: the champion's is unknown"),
    ({"dataset_version": "unversioned:ab12"}, {"dataset_version": "unversioned:ab12"},
     "dataset: this run's is a data directory's listing (paths and sizes), not a content version"),
    ({"code_version": None}, {"trainer": {"code_version": None, "image": None}},
     "code: this run's is unknown (no git checkout and no RN50_CODE_VERSION)"),
    ({"code_version": SHA + "-dirty"}, {"trainer": {"code_version": SHA + "-dirty", "image": None}},
     f"code: this run's is {SHA}-dirty: uncommitted changes"),
    ({}, {"trainer": {"code_version": SHA + "-dirty", "image": None}},
     f"code: the champion's is {SHA}-dirty: uncommitted changes"),
    # A champion trained before `rn50 train` recorded its code: the manifest's code_version was the publisher's.
    ({}, {"trainer": None, "code_version": SHA},
     "code: the champion's is unknown (its config.json records no trainer: trained before rn50 train recorded it)"),
    # An image known only by a moving name is no version of the code in it.
    ({"code_version": None, "trainer_image": "rn50-trainer:latest"},
     {"trainer": {"code_version": SHA, "image": "rn50-trainer:latest"}},
     "trainer image: this run's is rn50-trainer:latest: a moving tag, not a version (tag each build, or pin "
     "@sha256:)"),
    ({"code_version": None, "trainer_image": "registry.example.com:5000/rn50-trainer"},
     {"trainer": {"code_version": SHA, "image": "registry.example.com:5000/rn50-trainer"}},
     "trainer image: this run's is registry.example.com:5000/rn50-trainer: a moving tag, not a version (tag each "
     "build, or pin @sha256:)"),
])
def test_unknown_versions_never_count_as_equal(ours, theirs, difference):
    check = check_changes(lineage(**ours), champion(**theirs))
    assert check.train and check.differences == [difference]


def test_a_manifest_without_training_facts_differs_in_each():
    found = differences(lineage(), {"version": "v0001", "dataset_version": MD5, "code_version": SHA})
    assert "num_gpus: None -> 1" in found and "config.epochs: '<absent>' -> 20" in found


IN_IMAGE = {"code_version": "c" * 40, "image": IMAGE}  # trained in the image, whose code is c...c


@pytest.mark.parametrize(("run", "trainer", "difference"), [
    # The trainer image is bumped alone (launcher=kubernetes: the MPIJob's pods run it): a new trainer.
    (lineage(code_version=None, trainer_image=IMAGE[:-3] + "1.1"), IN_IMAGE,
     f"trainer image: {IMAGE} -> {IMAGE[:-3]}1.1"),
    # A gpu worker running the image (RN50_TRAINER_IMAGE set, launcher=local): the image, and this deployment's code.
    (lineage(code_version="c" * 40, trainer_image=IMAGE[:-3] + "1.1"), IN_IMAGE,
     f"trainer image: {IMAGE} -> {IMAGE[:-3]}1.1"),
    (lineage(code_version="d" * 40, trainer_image=IMAGE), IN_IMAGE, f"code: {'c' * 40} -> {'d' * 40}"),
    # From an image to this checkout's code, and back.
    (lineage(), IN_IMAGE, f"trainer: image {IMAGE} -> code {SHA} (no image)"),
    (lineage(code_version=None, trainer_image=IMAGE), LOCAL, f"trainer: code {SHA} (no image) -> image {IMAGE}"),
    # The champion's config.json names the code that trained it, whatever the manifest's top level says.
    (lineage(), {"code_version": "e" * 40, "image": None}, f"code: {'e' * 40} -> {SHA}"),
])
def test_the_trainer_is_compared_with_the_one_the_champions_config_json_records(run, trainer, difference):
    manifest = champion(trainer, code_version=SHA)
    assert differences(run, manifest) == [difference]


def test_the_same_trainer_image_is_the_same_trainer():
    assert differences(lineage(code_version=None, trainer_image=IMAGE), champion(IN_IMAGE)) == []
    assert differences(lineage(code_version="c" * 40, trainer_image=IMAGE), champion(IN_IMAGE)) == []
    pinned = "registry.example.com/rn50-trainer@sha256:" + "a" * 64
    assert differences(lineage(code_version=None, trainer_image=pinned),
                       champion({"code_version": "c" * 40, "image": pinned})) == []
    check = check_changes(lineage(code_version=None, trainer_image=IMAGE), champion(IN_IMAGE))
    assert not check.train and check.reason.startswith(
        f"nothing changed since v0003: dataset {MD5}, trainer image {IMAGE}, config equal; skipping")


# ---- the DAG's check_changes task ----------------------------------------------------------------------------


class _TaskInstance:
    """What the short-circuit uses of its task instance: the map index and XCom pushes."""

    map_index = -1

    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = json.loads(json.dumps(value))  # what Airflow stores: JSON


def _publish_champion(client, root, trainer: dict, init: dict | None = None) -> str:
    """A champion v0001 published to the S3 server with the smoke recipe on the run's dataset, trained by
    `trainer` (its config.json's record) from `init` (config.json's record of its first weights; None:
    scratch), and a run workspace whose fetch_data recorded that dataset."""
    from publish_support import BUCKET, make_run_outputs

    from pipeline.files import write_json
    from pipeline.stages.publish import publish_model
    from pipeline.workspace import RunWorkspace

    first = make_run_outputs(RunWorkspace(root, "manual__first").create(), trainer=trainer)
    if init is not None:
        write_json(first.model / "config.json", {**json.loads((first.model / "config.json").read_text()), "init": init})
    publish_model(first.model, eval_dir=first.eval, gate_dir=first.gate, export_dir=first.export, client=client,
                  bucket=BUCKET, dvc_prefix=None, lineage={"dataset_version": MD5, "num_gpus": 1, "hosts": "localhost"})
    ws = RunWorkspace(root, "scheduled__2027-01-01").create()
    write_json(ws.data_record, {"source": "dvc", "dataset_version": MD5})
    return BUCKET


@pytest.fixture
def checkout_at(monkeypatch):
    """Fix the code version of this checkout (the working copy may be dirty, which never counts as equal)."""
    import pipeline.provenance

    def fix(version: str | None) -> None:
        monkeypatch.setattr(pipeline.provenance, "code_version", lambda repo: version)

    return fix


@pytest.fixture
def published(registry, tmp_path, monkeypatch, checkout_at):
    """A champion trained from a checkout at SHA (no image), and this checkout at SHA."""
    checkout_at(SHA)
    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(tmp_path / "runs"))
    monkeypatch.delenv("RN50_NGC_CHECKPOINT", raising=False)
    monkeypatch.delenv("RN50_TRAINER_IMAGE", raising=False)
    return _publish_champion(registry[1], tmp_path / "runs", LOCAL)


def _run_check(dag, bucket, **conf):
    """check_changes's operator as the worker runs it: (what it returned, or the tasks it skipped; its XCom)."""
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    task = dag.get_task("check_changes").prepare_for_execution()  # the copy the task runner executes
    params = copy.deepcopy(dag.params)
    params.update({"profile": "smoke", "num_gpus": 1, "bucket": bucket, "prefix": "models", **conf})
    ti = _TaskInstance()
    context = {"params": params.validate(), "run_id": "scheduled__2027-01-01", "ti": ti, "task": task,
               "dag_run": None, "outlet_events": {}}
    try:
        return task.execute(context), ti.xcom
    except DownstreamTasksSkipped as skipped:
        return sorted(skipped.tasks), ti.xcom


def test_a_run_equal_to_the_champion_skips_every_task_after_check_changes(dag, published, capsys):
    after = sorted(set(dag.task_ids) - {"fetch_data", "validate_data", "check_changes"})
    assert {"train", "evaluate", "evaluate_baseline", "check_accuracy", "publish"} <= set(after)
    skipped, xcom = _run_check(dag, published)
    assert skipped == after
    reason = (f"nothing changed since v0001: dataset {MD5}, code {SHA}, config equal; skipping training "
              "(force_retrain to train anyway)")
    assert reason in capsys.readouterr().out  # the task's log
    assert xcom["return_value"] == {"train": False, "reason": reason, "champion": "v0001", "differences": [],
                                    "dataset_version": MD5, "code_version": SHA, "trainer_image": None}


def test_force_retrain_or_another_param_trains(dag, published, capsys):
    forced, xcom = _run_check(dag, published, force_retrain=True)
    assert forced["train"] is True and forced["reason"].endswith("training anyway (force_retrain)")
    changed, _ = _run_check(dag, published, steps=30)
    assert changed["train"] is True and changed["differences"] == ["config.steps: None -> 30"]
    assert "training: differs from the champion v0001 in config.steps: None -> 30" in capsys.readouterr().out
    assert xcom == {}  # a run that trains pushes its summary as the return value, as every task does


def test_bumping_only_the_trainer_image_trains(dag, registry, tmp_path, monkeypatch, checkout_at):
    """A training fix shipped by a new trainer image alone: the default queue's own code is unchanged."""
    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(tmp_path / "runs"))
    monkeypatch.delenv("RN50_NGC_CHECKPOINT", raising=False)
    checkout_at("c" * 40)  # the default queue's image, built from the same commit as the champion's trainer
    bucket = _publish_champion(registry[1], tmp_path / "runs", IN_IMAGE)
    monkeypatch.setenv("RN50_TRAINER_IMAGE", IMAGE)
    for launcher in ("kubernetes", "local"):  # the MPIJob's pods, or a gpu worker running the image (compose)
        skipped, xcom = _run_check(dag, bucket, launcher=launcher)
        assert "train" in skipped, (launcher, xcom)
        assert xcom["return_value"]["trainer_image"] == IMAGE
    assert xcom["return_value"]["code_version"] == "c" * 40
    bumped = IMAGE[:-3] + "1.1"
    monkeypatch.setenv("RN50_TRAINER_IMAGE", bumped)
    for launcher in ("kubernetes", "local"):
        trained, _ = _run_check(dag, bucket, launcher=launcher)
        assert trained["train"] is True and trained["differences"] == [f"trainer image: {IMAGE} -> {bumped}"]
        assert trained["trainer_image"] == bumped
    # On Kubernetes the pods' code is the image's, whatever the default queue runs: check_changes cannot read it.
    assert trained["code_version"] == "c" * 40 and _run_check(dag, bucket, launcher="kubernetes")[0]["code_version"] \
        is None
    monkeypatch.delenv("RN50_TRAINER_IMAGE")  # the MPIJob then runs the setting's default image
    trained, _ = _run_check(dag, bucket, launcher="kubernetes")
    assert trained["differences"] == [f"trainer image: {IMAGE} -> rn50-trainer:0.1.0"]
    trained, _ = _run_check(dag, bucket, launcher="local")  # and a local run trains this checkout's code
    assert trained["differences"] == [f"trainer: image {IMAGE} -> code {'c' * 40} (no image)"]


@pytest.mark.parametrize("where", ["path", "s3"])
def test_nvidia_s_checkpoint_replaced_at_the_same_place_trains(dag, registry, tmp_path, monkeypatch, checkout_at,
                                                              where):
    """The champion started from RN50_NGC_CHECKPOINT; the run names the same string, not the same checkpoint."""
    from publish_support import BUCKET

    from pipeline.stages.ngc_source import identity

    raw = registry[0]
    checkout_at(SHA)
    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(tmp_path / "runs"))
    monkeypatch.delenv("RN50_TRAINER_IMAGE", raising=False)
    folder = tmp_path / "ngc"
    folder.mkdir()
    files = {"checkpoint": b'model_checkpoint_path: "ckpt"\n', "ckpt.index": b"index v1",
             "ckpt.data-00000-of-00001": b"data v1"}

    def put(name: str, body: bytes) -> None:
        (folder / name).write_bytes(body)
        raw.put_object(Bucket=BUCKET, Key=f"ngc/rn50/{name}", Body=body)

    for name, body in files.items():
        put(name, body)
    source = str(folder) if where == "path" else f"s3://{BUCKET}/ngc/rn50"
    monkeypatch.setenv("RN50_NGC_CHECKPOINT", source)
    init = {"kind": "ngc", "source": source, "sha256": {}, "identity": identity(source), "checkpoint": "ckpt-0"}
    bucket = _publish_champion(registry[1], tmp_path / "runs", LOCAL, init)
    skipped, _ = _run_check(dag, bucket, init_from="ngc")
    assert "train" in skipped  # the same checkpoint: nothing changed
    put("ckpt.index", b"index v2")  # NVIDIA's next checkpoint, at the same path or URI
    (folder / "ckpt.data-00000-of-00001").unlink()
    raw.delete_object(Bucket=BUCKET, Key="ngc/rn50/ckpt.data-00000-of-00001")
    trained, _ = _run_check(dag, bucket, init_from="ngc")
    assert isinstance(trained, dict), f"skipped as unchanged: {trained}"
    assert trained["train"] is True and trained["differences"] == [
        f"init: ngc ({source}): not the checkpoint the champion started from (ckpt.data-00000-of-00001 gone, "
        "ckpt.index changed)"]
    monkeypatch.setenv("RN50_NGC_CHECKPOINT", str(tmp_path / "nowhere"))
    trained, _ = _run_check(dag, bucket, init_from="ngc")
    assert trained["train"] is True and trained["differences"] == [
        f"init: ngc ({tmp_path / 'nowhere'}): this run's checkpoint cannot be identified (RN50_NGC_CHECKPOINT="
        f"{tmp_path / 'nowhere'}: no such checkpoint directory or prefix, or no files in it)"]


def test_naming_nvidia_s_checkpoint_imports_no_tensorflow(tmp_path):
    """check_changes runs on the default queue, where TensorFlow is not installed."""
    import subprocess
    import sys

    (tmp_path / "ckpt.index").write_bytes(b"index")
    code = ("import sys, tasks.check_changes; from pipeline.stages.ngc_source import identity; "
            f"assert identity({str(tmp_path)!r})['sha256']; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')], 'tensorflow'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_a_run_without_a_champion_trains(dag, registry, tmp_path, monkeypatch):
    from publish_support import BUCKET

    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(tmp_path / "runs"))
    result, _ = _run_check(dag, BUCKET)
    assert result["train"] is True and result["reason"] == "no champion published yet; training"


def test_every_param_that_overrides_the_recipe_is_compared(dag):
    # A new Param that train passes on to the recipe must reach the comparison too, or a run that changes only it
    # would be skipped as unchanged.
    from pipeline.recipe import TrainConfig
    from tasks.check_changes import OVERRIDES

    fields = set(TrainConfig.__dataclass_fields__)
    assert {name for name in dag.params if name in fields} == {"profile", *OVERRIDES}
    task = dag.get_task("check_changes")
    assert task.ignore_downstream_trigger_rules is True and task.queue == "default"


# ---- the code version of an installed copy without git (an image: RN50_CODE_VERSION, docker/) -------------


@pytest.fixture
def no_git(tmp_path, monkeypatch):
    """A code directory outside any git checkout, as an image's site-packages is."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git looks no higher than tmp_path
    installed = tmp_path / "site-packages"
    installed.mkdir()
    return installed


def test_without_git_the_code_version_is_rn50_code_version(no_git, monkeypatch):
    from pipeline.provenance import code_version

    monkeypatch.delenv("RN50_CODE_VERSION", raising=False)
    assert code_version(no_git) is None
    for value in (SHA, SHA + "-dirty", "v1.2.3+build_4", "a" * 64):
        monkeypatch.setenv("RN50_CODE_VERSION", value)
        assert code_version(no_git) == value


def test_a_git_checkout_s_own_commit_wins_over_rn50_code_version(tmp_path, monkeypatch):
    import subprocess

    from pipeline.provenance import code_version

    repo = tmp_path / "code"
    repo.mkdir()
    (repo / "a.py").write_text("x = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "a.py"], ["commit", "-qm", "a"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    monkeypatch.setenv("RN50_CODE_VERSION", SHA)  # stale in a developer's shell
    assert code_version(repo) == head
    (repo / "a.py").write_text("x = 2\n")
    assert code_version(repo) == head + "-dirty"  # never the clean commit the variable claims


@pytest.mark.parametrize("value", ["v1 2", "a" * 65, "$(id)", "abc;rm", "v1\nforged: line", "caf\u00e9", "a/b"])
def test_a_malformed_rn50_code_version_is_refused_in_one_line_naming_it(no_git, monkeypatch, value):
    # It goes into manifests and log lines as it is.
    from pipeline.provenance import code_version
    from pipeline.settings import PROJECT_ROOT, SettingError

    monkeypatch.setenv("RN50_CODE_VERSION", value)
    with pytest.raises(SettingError) as refused:
        code_version(no_git)
    message = str(refused.value)
    assert message.startswith(f"RN50_CODE_VERSION={value!r}: must be 1-64 of") and "\n" not in message
    with pytest.raises(SettingError):
        code_version(PROJECT_ROOT)  # beside git too, where it is not used: it is wrong wherever it is set


def test_a_worker_without_a_checkout_compares_rn50_code_version(dag, published, no_git, monkeypatch):
    """check_changes in an image: the real code_version on a code directory without .git."""
    from airflow.sdk.exceptions import AirflowFailException

    import pipeline.provenance

    monkeypatch.setattr(pipeline.provenance, "code_version", REAL_CODE_VERSION)
    monkeypatch.setattr(pipeline.settings, "PROJECT_ROOT", no_git)
    monkeypatch.setenv("RN50_CODE_VERSION", SHA)  # the image built from the champion's commit
    skipped, xcom = _run_check(dag, published)
    assert "train" in skipped and xcom["return_value"]["train"] is False
    assert xcom["return_value"]["code_version"] == SHA
    monkeypatch.setenv("RN50_CODE_VERSION", "f" * 40)  # an image of another commit
    trained, _ = _run_check(dag, published)
    assert trained["train"] is True and trained["differences"] == [f"code: {SHA} -> {'f' * 40}"]
    monkeypatch.delenv("RN50_CODE_VERSION")  # an image built without it: unknown, so it trains
    trained, _ = _run_check(dag, published)
    assert trained["train"] is True and trained["code_version"] is None
    assert trained["differences"] == ["code: this run's is unknown (no git checkout and no RN50_CODE_VERSION)"]
    monkeypatch.setenv("RN50_CODE_VERSION", "v1; rm -rf /")
    with pytest.raises(AirflowFailException, match=r"^RN50_CODE_VERSION='v1; rm -rf /': must be 1-64 of"):
        _run_check(dag, published)  # failed for good: a retry would read the same value


# ---- what `rn50 train` records of itself -------------------------------------------------------------------


@pytest.mark.slow
def test_rn50_train_records_its_code_version_and_image_in_config_json(tmp_path, sample_dir):
    from support import rn50, venv_env

    from pipeline.contracts.config import TRAINER
    from pipeline.settings import PROJECT_ROOT

    model_dir = tmp_path / "model"
    args = ("train", "--profile", "smoke", "--steps", "1", "--batch-size", "8", "--data-dir", str(sample_dir),
            "--model-dir", str(model_dir))
    trained = rn50(*args, env={**venv_env(), "RN50_TRAINER_IMAGE": IMAGE}, timeout=600)  # as in the MPIJob's pods
    assert trained.returncode == 0, trained.stderr[-3000:]
    record = json.loads((model_dir / "config.json").read_text())[TRAINER]
    assert record == {"code_version": REAL_CODE_VERSION(PROJECT_ROOT), "image": IMAGE}


def test_the_trainer_names_an_image_only_where_the_deployment_says_it_runs_in_one(monkeypatch):
    from pipeline.provenance import trainer_record

    monkeypatch.setenv("RN50_CODE_VERSION", SHA)
    for unset in ({}, {"RN50_TRAINER_IMAGE": " "}):  # a checkout, or an install outside the image
        assert trainer_record(unset)["image"] is None
    assert trainer_record({"RN50_TRAINER_IMAGE": IMAGE})["image"] == IMAGE
