"""launcher=kubernetes: the DAG's train task renders an MPIJob from its params, submits it, waits.

No cluster runs here, so the Kubernetes API is a small in-memory stand-in with the three calls of the
cncf.kubernetes provider's KubernetesHook that we use, raising the kubernetes client's own
ApiException for a missing object. It plays the mpi-operator's part by moving the job through the
status conditions a real one reports.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from pipeline.train import mpijob
from pipeline.train.launch import parse_hostfile
from pipeline.train.mpijob import MPIJobFailed, job_state, run_mpijob, split_gpus

REPO = Path(__file__).resolve().parent.parent


def _status(kind: str | None, reason: str = "", message: str = "") -> dict:
    if kind is None:
        return {}
    return {"conditions": [{"type": "Created", "status": "True"},
                           {"type": kind, "status": "True", "reason": reason, "message": message}]}


class FakeCluster:
    """Custom objects in memory; each get of a job moves it to the next of its scripted states."""

    def __init__(self, states: list[dict] | None = None):
        self.objects: dict[tuple[str, str], dict] = {}
        self.states = list(states or [])
        self.calls: list[tuple[str, str]] = []
        self.deleted_with: dict = {}

    def _check(self, group, version, plural):
        assert (group, version, plural) == ("kubeflow.org", "v2beta1", "mpijobs")

    def create_custom_object(self, group, version, plural, body, namespace=None):
        self._check(group, version, plural)
        key = (namespace, body["metadata"]["name"])
        if key in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self.calls.append(("create", key[1]))
        self.objects[key] = copy.deepcopy(body)
        return body

    def get_custom_object(self, group, version, plural, name, namespace=None):
        self._check(group, version, plural)
        obj = self.objects.get((namespace, name))
        if obj is None:
            raise ApiException(status=404, reason="NotFound")
        if self.states:
            obj["status"] = self.states.pop(0)
        return copy.deepcopy(obj)

    def delete_custom_object(self, group, version, plural, name, namespace=None, **kwargs):
        self._check(group, version, plural)
        self.calls.append(("delete", name))
        self.deleted_with = kwargs
        if self.objects.pop((namespace, name), None) is None:
            raise ApiException(status=404, reason="NotFound")


def _body(name: str = "rn50-train-abc") -> dict:
    spec = mpijob.MPIJobSpec(name=name, namespace="rn50", image="rn50-trainer:test", launcher_command=["true"],
                             workers=2, gpus_per_worker=8, shared_claim="rn50-shared")
    return mpijob.render_mpijob(spec)


def _run(cluster: FakeCluster, body: dict, **kwargs):
    lines: list[str] = []
    result = run_mpijob(cluster, body, poll_s=0, log=lines.append, sleep=lambda s: None, **kwargs)
    return result, lines


def test_gpus_split_into_equal_workers():
    assert split_gpus(16, 8) == (2, 8)
    assert split_gpus(4, 8) == (1, 4)
    assert split_gpus(8, 8) == (1, 8)
    with pytest.raises(ValueError, match="multiple of gpus_per_node 8"):
        split_gpus(12, 8)
    with pytest.raises(ValueError):
        split_gpus(0, 8)


def test_the_operators_hostfile_becomes_horovodruns_host_list():
    text = "rn50-train-abc-worker-0.rn50-train-abc.rn50.svc slots=8\n# comment\n\nb.svc slots=8 max_slots=8\n"
    assert parse_hostfile(text) == "rn50-train-abc-worker-0.rn50-train-abc.rn50.svc:8,b.svc:8"
    assert parse_hostfile("h1:4\nh2\n") == "h1:4,h2:1"  # Intel MPI style, and a host without slots
    with pytest.raises(ValueError, match="line 1"):
        parse_hostfile("h1 cpus=8\n")
    with pytest.raises(ValueError, match="no hosts"):
        parse_hostfile("# empty\n")


def test_job_state_reads_the_conditions():
    assert job_state({}) == ("pending", "waiting for the pods to be scheduled")
    assert job_state({"status": _status("Running")})[0] == "running"
    assert job_state({"status": _status("Succeeded", "MPIJobSucceeded")}) == ("succeeded", "MPIJobSucceeded")
    failed = {"status": {"conditions": [{"type": "Running", "status": "False"},
                                        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                         "message": "launcher exited 1"}]}}
    assert job_state(failed) == ("failed", "BackoffLimitExceeded: launcher exited 1")


def test_names_are_stable_per_run_and_valid_for_kubernetes():
    a, b = mpijob.job_name("manual__2026-11-29T10:00:00+00:00"), mpijob.job_name("manual__2026-11-29T10:00:00+00:00")
    assert a == b != mpijob.job_name("scheduled__2026-12-01T00:00:00+00:00")
    mpijob.MPIJobSpec(name=a, namespace="n", image="i", launcher_command=["x"], workers=1, gpus_per_worker=1,
                      shared_claim="c")
    with pytest.raises(ValueError, match="lower-case"):
        mpijob.MPIJobSpec(name="Bad_Name", namespace="n", image="i", launcher_command=["x"], workers=1,
                          gpus_per_worker=1, shared_claim="c")


def test_submit_and_wait_until_succeeded():
    cluster = FakeCluster([_status(None), _status("Running"), _status("Running"), _status("Succeeded")])
    result, lines = _run(cluster, _body())
    assert cluster.calls == [("create", "rn50-train-abc")]
    assert job_state(result)[0] == "succeeded"
    assert lines[0] == "MPIJob rn50/rn50-train-abc submitted: 2 worker(s) x 8 GPU(s)"
    assert [line.split(": ")[1].split(" ")[0] for line in lines[1:]] == ["pending", "running", "succeeded"]


def test_a_failed_job_raises_with_the_operators_reason():
    cluster = FakeCluster([_status("Running"), _status("Failed", "MPIJobFailed", "worker-1 OOMKilled")])
    with pytest.raises(MPIJobFailed, match=r"worker-1 OOMKilled.*kubectl -n rn50 logs job/rn50-train-abc-launcher"):
        _run(cluster, _body())
    assert ("rn50", "rn50-train-abc") in cluster.objects  # kept: its pods' logs are what the operator reads


def test_a_retry_adopts_the_running_job_instead_of_starting_another():
    cluster = FakeCluster()
    cluster.create_custom_object("kubeflow.org", "v2beta1", "mpijobs", _body(), "rn50")
    cluster.calls.clear()
    cluster.states = [_status("Running"), _status("Running"), _status("Succeeded")]
    _, lines = _run(cluster, _body())
    assert cluster.calls == []
    assert "from an earlier try; waiting for it" in lines[0]


def test_a_retry_after_success_does_not_train_again():
    cluster = FakeCluster()
    cluster.create_custom_object("kubeflow.org", "v2beta1", "mpijobs", _body(), "rn50")
    cluster.calls.clear()
    cluster.states = [_status("Succeeded")]
    _, lines = _run(cluster, _body())
    assert cluster.calls == [] and "already succeeded" in lines[0]


def test_a_retry_after_failure_replaces_the_job():
    cluster = FakeCluster()
    cluster.create_custom_object("kubeflow.org", "v2beta1", "mpijobs", _body(), "rn50")
    cluster.calls.clear()
    cluster.states = [_status("Failed", "MPIJobFailed", "node lost"), _status("Succeeded")]
    _, lines = _run(cluster, _body())
    assert cluster.calls == [("delete", "rn50-train-abc"), ("create", "rn50-train-abc")]
    assert "node lost" in lines[0]


def test_stopping_the_task_deletes_the_job_so_the_ranks_checkpoint():
    cluster = FakeCluster([_status("Running")] * 5)
    ticks = iter(range(3))

    def sleep(_):  # Airflow's execution_timeout arrives as an exception while the task waits
        if next(ticks) == 2:
            raise TimeoutError("execution_timeout")

    with pytest.raises(TimeoutError):
        run_mpijob(cluster, _body(), poll_s=0, log=lambda _: None, sleep=sleep)
    assert cluster.calls[-1] == ("delete", "rn50-train-abc")
    assert cluster.deleted_with == {"propagation_policy": "Foreground"}
    assert cluster.objects == {}


def test_the_jobs_kill_hook_deletes_it_as_an_operators_on_kill_would():
    # MPIJobRun is the job's lifecycle, as an operator's: run() submits and waits, on_kill() deletes.
    cluster = FakeCluster()
    cluster.create_custom_object("kubeflow.org", "v2beta1", "mpijobs", _body(), "rn50")  # running, as run() left it
    mpijob.MPIJobRun(cluster, _body(), poll_s=0, log=lambda _: None).on_kill()
    assert cluster.calls[-1] == ("delete", "rn50-train-abc") and cluster.objects == {}
    assert cluster.deleted_with == {"propagation_policy": "Foreground"}


# ---- the DAG's train task with launcher=kubernetes ----------------------------------------------



@pytest.fixture
def shared(tmp_path, monkeypatch):
    """A shared volume at tmp_path, as the training pods and Airflow's workers would both mount it."""
    monkeypatch.setenv("RN50_K8S_SHARED_PATH", str(tmp_path))
    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("RN50_TRAINER_IMAGE", "registry.example.com/rn50-trainer:0.1.0")
    monkeypatch.setenv("RN50_K8S_POLL_S", "0")
    (tmp_path / "imagenet").mkdir()
    return tmp_path


def _trigger_train(dag, cluster, monkeypatch, run_id, data_dir, **conf):
    """Resolve the DAG's params with this run's conf, as a trigger does, and call its train task."""
    import tasks.connections

    monkeypatch.setattr(tasks.connections, "kubernetes_api", lambda conn_id: cluster)
    params = copy.deepcopy(dag.params)
    params.update(conf)
    context = {"params": params.validate(), "run_id": run_id}
    train = dag.get_task("train").python_callable
    return train({"data_dir": str(data_dir)}, **context)


@pytest.mark.parametrize(("num_gpus", "per_node", "workers", "gpus"), [(16, 8, 2, 8), (32, 8, 4, 8), (4, 8, 1, 4)])
def test_the_dag_renders_and_submits_the_mpijob_for_its_params(dag, shared, monkeypatch, num_gpus, per_node,
                                                               workers, gpus):
    cluster = FakeCluster([_status("Running"), _status("Succeeded")])
    run_id = "manual__2026-11-29T10:00:00+00:00"
    summary = _trigger_train(dag, cluster, monkeypatch, run_id, shared / "imagenet", launcher="kubernetes",
                             num_gpus=num_gpus, gpus_per_node=per_node, epochs=2, amp=True, init_from="ngc")
    [(namespace, name)] = cluster.objects
    job = cluster.objects[(namespace, name)]
    assert (namespace, name) == ("rn50", mpijob.job_name(run_id))
    assert job["apiVersion"] == "kubeflow.org/v2beta1" and job["kind"] == "MPIJob"
    assert job["spec"]["slotsPerWorker"] == gpus
    worker = job["spec"]["mpiReplicaSpecs"]["Worker"]
    assert worker["replicas"] == workers
    [container] = worker["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert container["image"] == "registry.example.com/rn50-trainer:0.1.0"
    launcher = job["spec"]["mpiReplicaSpecs"]["Launcher"]
    assert launcher["replicas"] == 1
    command = launcher["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["rn50", "train"]  # the trainer image's CLI, which the launcher pod runs
    flags = dict(zip(command[2::2], command[3::2], strict=False))
    assert flags["--np"] == str(num_gpus) and flags["--hostfile"] == "/etc/mpi/hostfile"
    assert flags["--profile"] == "ngc-90e" and flags["--epochs"] == "2" and "--amp" in command
    assert flags["--data-dir"] == str(shared / "imagenet") and flags["--run-id"] == run_id
    assert command[command.index("--init-from") + 1] == "ngc"  # the DAG's init_from reaches the trainer
    assert summary["num_gpus"] == num_gpus and summary["hosts"] == f"{name}: {workers}x{gpus} GPUs"
    assert summary["model_dir"].startswith(str(shared / "runs"))


def test_a_gpu_count_that_does_not_split_evenly_is_a_final_error(dag, shared, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    cluster = FakeCluster()
    with pytest.raises(AirflowFailException, match="multiple of gpus_per_node 8"):
        _trigger_train(dag, cluster, monkeypatch, "manual__x", shared / "imagenet", launcher="kubernetes",
                       num_gpus=12, gpus_per_node=8)
    assert cluster.objects == {}


def test_data_off_the_shared_volume_is_refused_before_anything_is_submitted(dag, shared, monkeypatch, tmp_path_factory):
    from airflow.sdk.exceptions import AirflowFailException

    elsewhere = tmp_path_factory.mktemp("local-disk")
    cluster = FakeCluster()
    with pytest.raises(AirflowFailException, match=r"data_dir .*local-disk.* not on the shared volume"):
        _trigger_train(dag, cluster, monkeypatch, "manual__y", elsewhere, launcher="kubernetes", num_gpus=8)
    assert cluster.objects == {}


def test_inside_the_launcher_pod_rn50_train_runs_horovodrun_on_the_hostfiles_hosts(tmp_path, monkeypatch, capsys):
    """What the MPIJob's launcher runs: `rn50 train --run-id R --np N --hostfile H` trains run R's workspace
    on the hosts the mpi-operator wrote, which are allowed for this job though RN50_ALLOWED_HOSTS names none."""
    import pipeline.train.launch
    from pipeline import cli
    from pipeline.workspace import RunWorkspace

    monkeypatch.delenv("RN50_ALLOWED_HOSTS", raising=False)
    started: list[list[str]] = []
    monkeypatch.setattr(pipeline.train.launch, "run_ranks", lambda command: started.append(command) or 0)
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("job-worker-0.job.rn50.svc slots=8\njob-worker-1.job.rn50.svc slots=8\n")
    args = ["train", "--run-id", "manual__z", "--workspace-root", str(tmp_path / "runs"), "--data-dir", str(tmp_path),
            "--profile", "ngc-90e", "--np", "16", "--hostfile", str(hostfile), "--epochs", "2"]
    assert cli.main(args) == 0
    [command] = started
    assert command[command.index("-np") + 1] == "16"
    assert command[command.index("-H") + 1] == "job-worker-0.job.rn50.svc:8,job-worker-1.job.rn50.svc:8"
    rank = command[command.index("pipeline") - 1:]  # what each rank runs: the run's model/, no relaunch
    model_dir = RunWorkspace(tmp_path / "runs", "manual__z").model
    assert rank[:3] == ["-m", "pipeline", "train"] and rank[rank.index("--model-dir") + 1] == str(model_dir)
    assert rank[rank.index("--epochs") + 1] == "2"
    assert not {"--np", "--hosts", "--hostfile", "--run-id"} & set(rank)

    hostfile.write_text("job-worker-0 slots=8\n$(reboot) slots=8\n")
    started.clear()
    assert cli.main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"rn50 train: error: {hostfile}: hostfile line 2: '$(reboot)' is not a host name "
        "(a letter or digit, then letters, digits, '.-_')")
    assert started == []


def test_the_ngc_checkpoint_setting_reaches_the_training_pods(shared, monkeypatch):
    # --init-from ngc runs in the pods: without the deployment's RN50_NGC_CHECKPOINT there it could not start.
    job = mpijob.training_job("manual__ngc", shared / "runs", data_dir=shared / "imagenet", profile="finetune",
                              num_gpus=16, gpus_per_node=8, init_from="ngc",
                              environ={**os.environ, "RN50_NGC_CHECKPOINT": "s3://ngc/resnet50_tf1_ckpt_20.06.0_amp"})
    for role in ("Launcher", "Worker"):
        [container] = job["spec"]["mpiReplicaSpecs"][role]["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["RN50_NGC_CHECKPOINT"] == "s3://ngc/resnet50_tf1_ckpt_20.06.0_amp", role
    job = mpijob.training_job("manual__none", shared / "runs", data_dir=shared / "imagenet", profile="ngc-90e",
                              num_gpus=8, gpus_per_node=8, environ={**os.environ, "RN50_NGC_CHECKPOINT": ""})
    [container] = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"]
    assert "RN50_NGC_CHECKPOINT" not in {e["name"] for e in container["env"]}


def test_the_training_pods_know_the_image_they_run(shared):
    # `rn50 train` in the pods records its image in config.json: what check_changes compares the next run's with.
    job = mpijob.training_job("manual__image", shared / "runs", data_dir=shared / "imagenet", profile="ngc-90e",
                              num_gpus=8, gpus_per_node=8, environ={**os.environ, "RN50_TRAINER_IMAGE": ""})
    for role in ("Launcher", "Worker"):
        [container] = job["spec"]["mpiReplicaSpecs"][role]["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["RN50_TRAINER_IMAGE"] == container["image"] == "rn50-trainer:0.1.0", role  # the default, unset
