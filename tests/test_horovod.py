"""The Horovod built into .venv works: TensorFlow and Gloo, a real 2-process allreduce, and ranks on two
hosts started over a real sshd with nothing secret in their command line or environment."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sshd_support import ADDRESSES, LoopbackSshd, loopback_sshd
from support import BIN, venv_env

HERE = Path(__file__).parent


def test_check_build_shows_tensorflow_and_gloo():
    result = subprocess.run(
        [str(BIN / "horovodrun"), "--check-build"], capture_output=True, text=True, env=venv_env(), timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "[X] TensorFlow" in result.stdout
    assert "[X] Gloo" in result.stdout.split("Available Tensor Operations")[0]


@pytest.mark.slow
def test_two_process_allreduce_averages_across_ranks(tmp_path):
    result = subprocess.run(
        [
            str(BIN / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
            sys.executable, str(HERE / "horovod_allreduce.py"), str(tmp_path),
        ],
        capture_output=True, text=True, env=venv_env(), timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["size"] == 2
        # Rank r contributes [r+1, 10(r+1)]: the mean of ranks 0 and 1 is [1.5, 15], the sum [3, 30].
        assert got["average"] == [1.5, 15.0]
        assert got["sum"] == [3.0, 30.0]


@pytest.mark.slow
def test_two_ranks_train_to_identical_weights_on_different_data(tmp_path, sample_dir):
    result = subprocess.run(
        [
            str(BIN / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
            sys.executable, str(HERE / "horovod_train.py"), str(sample_dir), str(tmp_path),
        ],
        capture_output=True, text=True, env={**venv_env(), "PYTHONPATH": str(HERE.parent)}, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["size"] for r in ranks] == [2, 2]
    assert ranks[0]["initial_conv1"] != ranks[1]["initial_conv1"]  # they really started apart
    assert ranks[0]["iterations"] == ranks[1]["iterations"] == 3
    assert ranks[0]["trained"] == ranks[1]["trained"]  # weights and momentum slots, bit for bit
    # BatchNorm's moving statistics follow each rank's own batches (no sync BN, as in NVIDIA's recipe);
    # only rank 0's are checkpointed.
    assert ranks[0]["bn_statistics"] != ranks[1]["bn_statistics"]
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the logged loss is the mean over ranks
    seen = [set(r["seen"]) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 24
    assert not seen[0] & seen[1]


# The launcher's own code path (the CLI's, without TensorFlow training): the ranks run a probe instead.
LAUNCH = ("import sys; from pipeline.train.launch import horovodrun_command, run_ranks; "
          "sys.exit(run_ranks(horovodrun_command(2, sys.argv[1], sys.argv[2:])))")
TWO_HOSTS = ",".join(f"{address}:1" for address in ADDRESSES)


def _secrets() -> dict[str, str]:
    """What an Airflow Celery worker's environment holds, with values found nowhere else."""
    token = secrets.token_hex(12)
    return {
        "AWS_ACCESS_KEY_ID": f"AKIA{token[:16].upper()}",
        "AWS_SECRET_ACCESS_KEY": f"aws-secret-{token}",
        "AWS_SESSION_TOKEN": f"aws-session-{token}",
        "AIRFLOW__CORE__FERNET_KEY": f"fernet-{token}",
        "AIRFLOW__API_AUTH__JWT_SECRET": f"jwt-{token}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://airflow:db-{token}@postgres/airflow",
        "RN50_DB_PASSWORD": f"rn50-password-{token}",  # a secret's name under a prefix the ranks do get
        "RN50_TRACKING_URI": f"https://ci:uri-{token}@tracking.example/",  # a password inside a URL
    }


# Training settings the ranks need, which must still reach them; and a variable they do not need.
SETTINGS = {"TF_CPP_MIN_LOG_LEVEL": "2", "NCCL_DEBUG": "WARN", "RN50_PROBE_SETTING": "kept"}
UNNEEDED = {"UNRELATED_SETTING": "dropped"}


@pytest.fixture
def sshd(tmp_path):
    with loopback_sshd(tmp_path / "sshd") as daemon:
        yield daemon


def _launcher_env(sshd: LoopbackSshd, tmp_path: Path, planted: dict[str, str]) -> dict[str, str]:
    home = tmp_path / "home"  # horovodrun caches its ssh checks in ~/.horovod
    home.mkdir(exist_ok=True)
    return {**os.environ, **planted, **SETTINGS, **UNNEEDED, "HOME": str(home),
            "PATH": os.pathsep.join([str(sshd.bin_dir), str(BIN), os.environ["PATH"]]),
            "RN50_ALLOWED_HOSTS": ",".join(ADDRESSES), "HOROVOD_START_TIMEOUT": "120"}


@pytest.mark.slow
def test_ranks_on_two_hosts_over_ssh_get_no_secret(tmp_path, sshd):
    planted = _secrets()
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", LAUNCH, TWO_HOSTS, sys.executable, str(HERE / "horovod_env_probe.py"), str(out)],
        capture_output=True, text=True, env=_launcher_env(sshd, tmp_path, planted), timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["size"], r["sum"]) for r in ranks] == [(2, [3.0])] * 2

    # Both ranks really ran on the two "hosts", each under an sshd session to that address.
    rank_commands = [s for s in sshd.sessions() if "horovod_env_probe.py" in s.command]
    assert sorted(s.server_address for s in rank_commands) == sorted(ADDRESSES)
    assert sorted(r["environ"]["SSH_CONNECTION"].split()[2] for r in ranks) == sorted(ADDRESSES)
    assert all(any(p["name"].startswith("sshd") for p in r["lineage"]) for r in ranks)

    # What a remote host sees: every command sshd ran, the ranks' environment and command lines.
    seen = [s.command for s in sshd.sessions()]
    for r in ranks:
        seen += [f"{k}={v}" for k, v in r["environ"].items()] + [" ".join(p["cmdline"]) for p in r["lineage"]]
    leaked = {name for name, value in planted.items() for text in seen if value in text or f"{name}=" in text}
    assert not leaked, f"sent to the hosts: {sorted(leaked)}"
    for r in ranks:
        assert {k: r["environ"].get(k) for k in SETTINGS} == SETTINGS
        assert "UNRELATED_SETTING" not in r["environ"]


@pytest.mark.slow
def test_a_host_off_the_allow_list_is_refused_before_anything_starts(tmp_path, sshd):
    env = _launcher_env(sshd, tmp_path, _secrets())
    result = subprocess.run(
        [str(BIN / "rn50"), "train", "--np", "2", "--hosts", f"{ADDRESSES[0]}:1,127.0.0.9:1",
         "--data-dir", str(tmp_path), "--model-dir", str(tmp_path / "model")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "rn50 train: error: --hosts: 127.0.0.9 is not an allowed host (RN50_ALLOWED_HOSTS=127.0.0.2,127.0.0.3)")
    assert "Traceback" not in result.stderr
    assert sshd.sessions() == []  # not even horovodrun's ssh check reached the allowed host
    assert not (tmp_path / "model").exists()
