"""Where the ranks run and what they get: host names, the deployment's allow-list, the ranks' environment.

A run names its hosts (the DAG's `hosts` Param, `rn50 train --hosts`, an MPIJob's hostfile), and
horovodrun ssh's into them with the launcher's environment on the command line. So a host name must
be a host name (nothing a shell would read), only hosts the deployment allows may be named, and the
ranks get the environment training needs, never the Airflow worker's secrets. The real multi-host run
over sshd is in test_horovod.py.
"""

from __future__ import annotations

import copy
import re
import sys

import pytest
from support import rn50, venv_env

from pipeline.train.launch import check_hosts, horovodrun_command, parse_hostfile, parse_hosts, rank_environment

BAD_NAMES = ["node1;rm -rf /", "$(reboot)", "node`id`", "a b", "node|nc", "-oProxyCommand=sh", "user@node",
             "node/x", "node&", "n'1", 'n"1', "node\nx", "*"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_host_name_with_shell_characters_is_refused_naming_it(name):
    with pytest.raises(ValueError) as caught:
        parse_hosts(f"node0:2,{name}:2")
    message = str(caught.value)
    assert message.startswith("--hosts: ") and repr(name) in message and "\n" not in message


def test_host_names_and_addresses_are_accepted():
    assert parse_hosts("node-1.example.com:8, 10.0.0.2:4,gpu_node") == [
        ("node-1.example.com", 8), ("10.0.0.2", 4), ("gpu_node", 1)]


@pytest.mark.parametrize("name", ["$(reboot)", "node;id", "-oProxyCommand=sh"])
def test_a_hostfile_with_shell_characters_is_refused_naming_the_line(name):
    with pytest.raises(ValueError, match=rf"^hostfile line 2: {re.escape(repr(name))} is not a host name"):
        parse_hostfile(f"worker-0 slots=8\n{name} slots=8\n")


def test_only_localhost_unless_the_deployment_allows_more():
    assert check_hosts("localhost:4", environ={}) == [("localhost", 4)]
    with pytest.raises(ValueError, match=r"^--hosts: node1 is not an allowed host "
                                         r"\(RN50_ALLOWED_HOSTS is not set: localhost only\)$"):
        check_hosts("localhost:4,node1:4", environ={})
    allowed = {"RN50_ALLOWED_HOSTS": " node1 , Node2.example.com,"}
    assert check_hosts("node1:8,node2.example.com:8", environ=allowed) == [("node1", 8), ("node2.example.com", 8)]
    with pytest.raises(ValueError, match=r"^--hosts: node3 is not an allowed host "
                                         r"\(RN50_ALLOWED_HOSTS=node1,Node2.example.com\)$"):
        check_hosts("node1:8,node3:8", environ=allowed)


def test_horovodrun_command_checks_the_hosts_before_anything_runs():
    with pytest.raises(ValueError, match="node9 is not an allowed host"):
        horovodrun_command(2, "node9:2", ["python", "x.py"], environ={"RN50_ALLOWED_HOSTS": "node1"})
    command = horovodrun_command(4, "node1:2,localhost:2", ["python", "x.py"], environ={"RN50_ALLOWED_HOSTS": "node1"})
    assert command[1:] == ["-np", "4", "-H", "node1:2,localhost:2", "--gloo", "python", "x.py"]


def test_the_ranks_get_what_training_needs_and_no_secret():
    unwanted = {  # an Airflow Celery worker's secrets, and what the ranks have no use for
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_SESSION_TOKEN": "tok",
        "AIRFLOW__CORE__FERNET_KEY": "fernet", "AIRFLOW__API_AUTH__JWT_SECRET": "jwt",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:pw@db/airflow", "AIRFLOW_HOME": "/opt/airflow",
        "RN50_DB_PASSWORD": "pw", "RN50_API_TOKEN": "tok", "RN50_SIGNING_KEY": "k", "RN50_METRICS_DSN": "dsn",
        "TF_SECRET_THING": "x", "NCCL_CREDENTIALS": "x", "RN50_TRACKING_URI": "https://ci:pw@tracking.example/",
        "RN50_BROKER_URL": "redis://:pw@redis:6379/0", "HOROVOD_SECRET_KEY": "k", "RN50_AWS_CONN_ID": "aws_default",
        "HOSTNAME": "worker-1", "OLDPWD": "/", "GOOGLE_APPLICATION_CREDENTIALS": "/keys/sa.json",
    }
    needed = {
        "PATH": "/venv/bin:/usr/bin", "PYTHONPATH": "/app", "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
        "HOME": "/home/airflow", "LANG": "C.UTF-8", "TF_CPP_MIN_LOG_LEVEL": "2", "XLA_FLAGS": "--xla_gpu_x",
        "CUDA_CACHE_MAXSIZE": "4294967296", "NVIDIA_VISIBLE_DEVICES": "all", "NCCL_DEBUG": "WARN",
        "NCCL_SOCKET_IFNAME": "eth0", "HOROVOD_FUSION_THRESHOLD": "67108864", "OMP_NUM_THREADS": "8",
        "RN50_WORKSPACE_ROOT": "/shared/runs", "RN50_ALLOWED_HOSTS": "node1", "SSH_AUTH_SOCK": "/tmp/agent.sock",
        "RN50_DATA_URL": "https://data.example/imagenet",
    }
    assert rank_environment({**unwanted, **needed}) == needed


@pytest.mark.slow
def test_rn50_train_refuses_a_bad_host_name_in_one_line(tmp_path):
    result = rn50("train", "--np", "2", "--hosts", "localhost:1,$(touch pwned):1", "--data-dir", str(tmp_path),
                  "--model-dir", str(tmp_path / "model"), env={**venv_env(), "RN50_ALLOWED_HOSTS": "$(touch pwned)"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("rn50 train: error: --hosts: '$(touch pwned)' is not")
    assert "Traceback" not in result.stderr and not (tmp_path / "model").exists()



def _trigger_train(dag, monkeypatch, tmp_path, **conf) -> list[tuple[list[str], dict | None]]:
    """Call the DAG's train task with a trigger's conf; return the trainer commands it would have started."""
    import pipeline.stages.train

    started: list[tuple[list[str], dict | None]] = []
    monkeypatch.setattr(pipeline.stages.train, "run_child", lambda cmd, env=None: started.append((cmd, env)) or 0)
    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(tmp_path / "runs"))
    params = copy.deepcopy(dag.params)
    params.update(conf)
    context = {"params": params.validate(), "run_id": "manual__hosts"}
    dag.get_task("train").python_callable({"data_dir": str(tmp_path)}, **context)
    return started


def test_a_trigger_naming_a_host_off_the_allow_list_is_refused(dag_parsed_with, monkeypatch, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException, ParamValidationError

    dag = dag_parsed_with(RN50_NUM_GPUS="16")  # two hosts of 8 GPUs: the deployment reserves 16 per run
    monkeypatch.setenv("RN50_ALLOWED_HOSTS", "gpu1,gpu2,-Jattacker.example")
    with pytest.raises(ParamValidationError):  # the form: an ssh option (a jump host) is no host name
        _trigger_train(dag, monkeypatch, tmp_path, hosts="gpu1:8,-Jattacker.example:8", num_gpus=16)
    with pytest.raises(AirflowFailException, match=r"^--hosts: attacker.example is not an allowed host"):
        _trigger_train(dag, monkeypatch, tmp_path, hosts="gpu1:8,attacker.example:8", num_gpus=16)
    [(cmd, _env)] = _trigger_train(dag, monkeypatch, tmp_path, hosts="gpu1:8,gpu2:8", num_gpus=16)
    assert cmd[cmd.index("--hosts") + 1] == "gpu1:8,gpu2:8"


def test_a_host_off_the_allow_list_fails_the_runs_first_task_before_any_work(dag, monkeypatch, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("RN50_ALLOWED_HOSTS", "gpu1")
    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(tmp_path / "runs"))
    params = copy.deepcopy(dag.params)
    params.update({"hosts": "gpu1:8,attacker.example:8", "data_dir": str(tmp_path / "no-such-data")})
    context = {"params": params.validate(), "run_id": "manual__hosts"}
    with pytest.raises(AirflowFailException, match=r"^--hosts: attacker.example is not an allowed host"):
        dag.get_task("fetch_data").python_callable(**context)
    assert not (tmp_path / "runs").exists()  # refused before the run's workspace or any data


def test_a_trainer_that_cannot_start_fails_the_task_for_good_saying_why(tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    import tasks.train
    from pipeline.workspace import RunWorkspace

    ws = RunWorkspace(tmp_path / "runs", "manual__nodata").create()
    missing = tmp_path / "no-such-data"
    with pytest.raises(AirflowFailException) as failed:  # the real `rn50 train`, in a child process
        tasks.train.run(ws, data_dir=str(missing), profile="smoke")
    assert str(failed.value) == f"training could not start: rn50 train: error: {missing}: no such data directory"


@pytest.mark.parametrize(("code", "tail", "final"), [
    (1, ["rn50 train: error: /d/train-00000-of-00001 record 2: jpeg::Uncompress failed"], True),  # the data's fault
    # A crash `rn50 train` did not foresee exits RETRY (75), not Python's 1.
    (75, ["Traceback (most recent call last):", "RuntimeError: NCCL communicator was aborted"], False),
])
def test_a_training_failure_is_retried_only_when_a_retry_could_pass(tmp_path, monkeypatch, code, tail, final):
    from airflow.sdk.exceptions import AirflowFailException

    import pipeline.stages.train
    import tasks.train
    from pipeline.command import CommandError
    from pipeline.workspace import RunWorkspace

    def fails(cmd, env=None):
        raise CommandError(cmd, None, code, tail)

    monkeypatch.setattr(pipeline.stages.train, "run_child", fails)
    ws = RunWorkspace(tmp_path / "runs", "manual__fails").create()
    with pytest.raises((AirflowFailException, RuntimeError)) as failed:
        tasks.train.run(ws, data_dir=str(tmp_path), profile="smoke")
    assert isinstance(failed.value, AirflowFailException) == final  # final: Airflow does not retry it
    assert tail[-1] in str(failed.value)


@pytest.mark.parametrize(("code", "stderr", "final"), [
    # What the child says decides nothing: an error line with a retryable exit is retried...
    (75, "rn50 train: error: /d/train-00000-of-00001 record 2: jpeg::Uncompress failed", False),
    (143, "rn50 train: error: stopped", False),  # a signal
    (137, "", False),  # killed: nothing said at all
    # ...and the final exit codes are final whatever the child printed, or did not.
    (1, "Traceback (most recent call last):\nRuntimeError: NCCL communicator was aborted", True),
    (1, "", True),
    (2, "usage: something else entirely", True),
])
def test_the_train_tasks_retry_decision_is_the_childs_exit_code(tmp_path, monkeypatch, code, stderr, final):
    from airflow.sdk.exceptions import AirflowFailException

    import pipeline.stages.train
    import tasks.train
    from pipeline.contracts import exit_codes
    from pipeline.workspace import RunWorkspace

    assert (code in exit_codes.FINAL) == final
    child = [sys.executable, "-c", f"import sys; sys.stderr.write({stderr!r}); sys.exit({code})"]
    monkeypatch.setattr(pipeline.stages.train, "train_command", lambda **_: child)  # a real child, a real exit
    ws = RunWorkspace(tmp_path / "runs", "manual__exit").create()
    with pytest.raises((AirflowFailException, RuntimeError)) as failed:
        tasks.train.run(ws, data_dir=str(tmp_path), profile="smoke")
    assert isinstance(failed.value, AirflowFailException) == final
    if not final:
        assert f"rn50 train exited with {code}" in str(failed.value) and "a retry resumes from" in str(failed.value)


def test_rn50_train_exits_retry_with_its_traceback_on_a_failure_it_did_not_foresee(sample_dir, tmp_path, monkeypatch,
                                                                                   capsys):
    import pipeline.train.loop
    from pipeline import cli
    from pipeline.contracts import exit_codes

    def crashes(*args, **kwargs):
        raise RuntimeError("NCCL communicator was aborted")

    monkeypatch.setattr(pipeline.train.loop, "train", crashes)
    args = ["train", "--profile", "smoke", "--data-dir", str(sample_dir), "--model-dir", str(tmp_path / "model")]
    assert cli.main(args) == exit_codes.RETRY  # not Python's 1, which the train task reads as final
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().endswith("NCCL communicator was aborted")
    # What it foresaw keeps its code and its one line: a data directory that is not there is 2.
    assert cli.main([*args[:4], str(tmp_path / "nowhere"), *args[5:]]) == exit_codes.USAGE
    assert capsys.readouterr().err.strip() == f"rn50 train: error: {tmp_path / 'nowhere'}: no such data directory"
