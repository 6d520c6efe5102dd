"""train: `rn50 train` in a child process (horovodrun for several GPUs); a retry resumes its checkpoint.

A child process, not a call: Horovod's ranks must be processes, and TensorFlow's GPU state must not
live in the Airflow worker. When Airflow stops the task (timeout, mark failed) the child gets SIGTERM,
saves a checkpoint and exits, and the retry carries on from there.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline.train.logs import read_metrics
from pipeline.workspace import RunWorkspace
from tasks.common import add_workspace_args, cli, final, workspace

EXIT_USAGE = 2
STOP_GRACE_S = 120  # a checkpoint of ResNet50 with its optimizer takes seconds; this bounds a stuck save


def train_command(*, data_dir: str, model_dir: Path, profile: str, num_gpus: int = 1, hosts: str | None = None,
                  epochs: int | None = None, batch_size: int | None = None, steps: int | None = None,
                  amp: bool | None = None, xla: bool | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline", "train", "--profile", profile, "--data-dir", str(data_dir),
           "--model-dir", str(model_dir), "--np", str(num_gpus)]
    if hosts:
        cmd += ["--hosts", hosts]
    for flag, value in (("--epochs", epochs), ("--batch-size", batch_size), ("--steps", steps)):
        if value is not None:
            cmd += [flag, str(value)]
    for name, value in (("amp", amp), ("xla", xla)):
        if value is not None:
            cmd.append(f"--{name}" if value else f"--no-{name}")
    return cmd


def run_child(cmd: list[str]) -> int:
    """Run the trainer; if this process is told to stop, pass SIGTERM on and wait for the checkpoint."""
    child = subprocess.Popen(cmd)

    def stop(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return child.wait()
    except BaseException:  # Airflow's timeout arrives as an exception in this process
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(ws: RunWorkspace, *, data_dir: str, profile: str, **options: Any) -> dict[str, Any]:
    cmd = train_command(data_dir=data_dir, model_dir=ws.model, profile=profile, **options)
    print("running: " + " ".join(cmd), flush=True)
    code = run_child(cmd)
    if code == EXIT_USAGE:
        raise final(ValueError(f"rn50 train refused its arguments (exit 2): {' '.join(cmd[3:])}"))
    if code != 0:
        raise RuntimeError(f"rn50 train exited with {code}; a retry resumes from {ws.model}/checkpoints")
    last = next((m for m in reversed(read_metrics(ws.model)) if "loss" in m), {})
    return {"model_dir": str(ws.model), "step": last.get("step"), "epoch": last.get("epoch"),
            "loss": last.get("loss"), "train_throughput": last.get("train_throughput"), "num_gpus": options.get(
                "num_gpus", 1), "hosts": options.get("hosts")}


def _main(args: argparse.Namespace) -> dict[str, Any]:
    return run(workspace(args.run_id, args.workspace_root), data_dir=args.data_dir, profile=args.profile,
               num_gpus=args.num_gpus, hosts=args.hosts, epochs=args.epochs, batch_size=args.batch_size,
               steps=args.steps)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="tasks.train", description=__doc__)
    add_workspace_args(parser)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--profile", default="ngc-90e")
    parser.add_argument("--num-gpus", type=int, default=1)
    parser.add_argument("--hosts")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--steps", type=int)
    cli(_main, parser)
