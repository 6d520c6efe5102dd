"""`rn50 train` and `rn50 evaluate` as a user runs them: resume after kill -9, SIGTERM, the smoke profile.

These start real processes (and horovodrun for two ranks) on the sample dataset at 32 px.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import BIN, rn50, venv_env

from pipeline.train.logs import read_metrics

FAST = ["--profile", "smoke", "--batch-size", "8", "--no-xla", "--log-every", "1"]


def _start(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "rn50"), *args], stdout=log.open("w"), stderr=subprocess.STDOUT, env=venv_env()
    )


def _wait_for_step(model_dir: Path, proc: subprocess.Popen, step: int, log: Path, timeout: float = 300) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [m["step"] for m in read_metrics(model_dir) if "loss" in m] if model_dir.exists() else []
        if steps and steps[-1] >= step:
            return steps[-1]
        if proc.poll() is not None:
            pytest.fail(f"training exited with {proc.returncode} before step {step}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no step {step} within {timeout} s:\n{log.read_text()[-3000:]}")


def _latest_checkpoint_step(model_dir: Path) -> int:
    import tensorflow as tf

    path = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    assert path is not None, f"no checkpoint in {model_dir}"
    return int(path.rsplit("-", 1)[1])


@pytest.mark.slow
def test_kill_9_loses_at_most_k_steps_and_the_step_counter_continues(tmp_path, sample_dir):
    model_dir, log = tmp_path / "model", tmp_path / "train.log"
    args = ["train", *FAST, "--data-dir", str(sample_dir), "--model-dir", str(model_dir), "--steps", "30",
            "--checkpoint-every", "5"]
    proc = _start(*args, log=log)
    reached = _wait_for_step(model_dir, proc, 12, log)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    saved = _latest_checkpoint_step(model_dir)
    assert saved % 5 == 0 and reached - saved <= 5, (reached, saved)

    resumed = rn50(*args, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {model_dir / 'checkpoints'}/ckpt-{saved} at step {saved}" in resumed.stdout
    steps = [m["step"] for m in read_metrics(model_dir) if "loss" in m]
    restart = steps.index(saved + 1, steps.index(reached))  # the first step logged after the restart
    assert steps[restart:] == list(range(saved + 1, 31))
    assert _latest_checkpoint_step(model_dir) == 30

    again = rn50(*args, timeout=120)
    assert again.returncode == 0
    assert "training already finished: step 30 of 30; nothing to do" in again.stdout


@pytest.mark.slow
def test_sigterm_to_the_launcher_checkpoints_and_stops_every_rank(tmp_path, sample_dir):
    import psutil

    from pipeline.train.launch import is_rank

    model_dir, log = tmp_path / "model", tmp_path / "train.log"
    proc = _start("train", *FAST, "--np", "2", "--data-dir", str(sample_dir), "--model-dir", str(model_dir),
                  "--steps", "500", log=log)
    reached = _wait_for_step(model_dir, proc, 3, log)
    ranks = [p for p in psutil.Process(proc.pid).children(recursive=True) if is_rank(p)]
    assert len(ranks) == 2
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    took = time.monotonic() - sent
    assert code == 128 + signal.SIGTERM, log.read_text()[-3000:]
    assert took < 30, f"took {took:.0f} s to stop"
    _gone, alive = psutil.wait_procs(ranks, timeout=10)
    assert not alive
    saved = _latest_checkpoint_step(model_dir)
    assert reached <= saved < 500
    assert "checkpoint at step" in log.read_text()


def test_train_and_evaluate_usage_errors_are_one_line(tmp_path, sample_dir):
    result = rn50("train", "--profile", "smoke", "--model-dir", str(tmp_path / "m"), timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("--data-dir and --model-dir (or --run-id) are required (or use --benchmark)")

    result = rn50("train", "--profile", "smoke", "--hosts", "a:1,b:x", "--np", "2", "--data-dir", str(sample_dir),
                  "--model-dir", str(tmp_path / "m"), timeout=120)
    assert result.returncode == 2 and "--hosts: slots must be a number in 'b:x'" in result.stderr

    result = rn50("evaluate", "--data-dir", str(sample_dir), "--model-dir", str(tmp_path / "none"), timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"rn50 evaluate: error: {tmp_path / 'none'}")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_model_dir_refuses_a_different_recipe(tmp_path, sample_dir):
    from pipeline.recipe import get_profile

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    get_profile("smoke").replace(batch_size=8).save(model_dir)
    result = rn50("train", "--profile", "smoke", "--batch-size", "16", "--data-dir", str(sample_dir),
                  "--model-dir", str(model_dir), timeout=120)
    assert result.returncode == 2
    assert "trained with a different config (batch_size: 8 -> 16)" in result.stderr


@pytest.mark.slow
def test_smoke_profile_on_two_ranks_reaches_60_percent_top1(tmp_path, sample_dir):
    """The issue's acceptance run: `rn50 train --profile smoke --np 2`, then `rn50 evaluate`."""
    model_dir = tmp_path / "model"
    trained = rn50("train", "--profile", "smoke", "--np", "2", "--data-dir", str(sample_dir),
                   "--model-dir", str(model_dir), timeout=1500)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    evaluated = rn50("evaluate", "--data-dir", str(sample_dir), "--model-dir", str(model_dir), timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    print(evaluated.stdout)

    result = json.loads((model_dir / "eval.json").read_text())
    assert result["eval_count"] == 500  # every validation record, once
    assert result["top1_accuracy"] >= 60.0
    assert result["top5_accuracy"] >= result["top1_accuracy"]
    assert result["eval_throughput"] > 0

    metrics = read_metrics(model_dir)
    train_lines = [m for m in metrics if "loss" in m]
    assert {"step", "epoch", "loss", "lr", "train_throughput"} <= set(train_lines[-1])
    # 1,010 records / 64 per step = 15 steps per epoch, x 20 epochs
    assert train_lines[-1]["step"] == 300 and train_lines[-1]["epoch"] == 20
    assert metrics[-1]["top1_accuracy"] == result["top1_accuracy"]
    assert list((model_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert "config: {" in trained.stdout and '"profile": "smoke"' in trained.stdout
