"""Training a model and using one: `rn50 train`, `rn50 mpijob` (the same run as a Kubernetes MPIJob), `rn50 predict`."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from pipeline import settings
from pipeline.cli.shared import (
    Subparsers,
    positive_int,
    quiet_tensorflow,
    recipe_flags,
    setting_default,
    workspace_flags,
)
from pipeline.contracts import exit_codes
from pipeline.errors import Failed, Refused, Retryable
from pipeline.recipe import TrainConfig

# Overrides of the profile: CLI flag -> TrainConfig field. None (flag absent) keeps the profile's value.
TRAIN_OVERRIDES = ("epochs", "batch_size", "image_size", "amp", "xla", "steps", "checkpoint_every", "log_every", "seed")


def _train_config(args: argparse.Namespace) -> TrainConfig:
    from pipeline.recipe import resolve

    try:
        return resolve(args.profile, **{k: getattr(args, k) for k in TRAIN_OVERRIDES})
    except ValueError as exc:
        raise Refused(str(exc)) from exc


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The same `rn50 train` command for each rank, without --np/--hosts (so ranks don't relaunch)."""
    from pipeline.train.mpijob import train_flags

    argv = ["train", "--profile", args.profile]
    if args.data_dir is not None:
        argv += ["--data-dir", str(args.data_dir)]
    if args.model_dir is not None:
        argv += ["--model-dir", str(args.model_dir)]
    argv += train_flags(**{key: getattr(args, key) for key in TRAIN_OVERRIDES}, init_from=args.init_from)
    if args.benchmark:
        argv += ["--benchmark", "--benchmark-steps", str(args.benchmark_steps)]
    return argv


def _run_model_dir(args: argparse.Namespace) -> Path:
    """The model/ of run RUN_ID's workspace (made if new): where the DAG's train task trains that run."""
    from pipeline.workspace import RunWorkspace

    if args.model_dir is not None:
        raise Refused("give --model-dir or --run-id, not both")
    try:
        return RunWorkspace(args.workspace_root, args.run_id).create().model
    except (OSError, ValueError) as exc:
        raise Refused(f"--run-id {args.run_id}: {exc}") from exc


def _hosts(args: argparse.Namespace) -> tuple[str | None, dict[str, str]]:
    """The ranks' hosts and the environment that allows them: --hosts must be among the deployment's
    RN50_ALLOWED_HOSTS; the hosts of a --hostfile are the ones the cluster gave this job, so it allows them."""
    if not args.hostfile:
        return args.hosts, dict(os.environ)
    from pipeline.train.launch import ALLOWED_HOSTS_VAR, parse_hostfile, parse_hosts

    try:
        hosts = parse_hostfile(args.hostfile.read_text())
    except (OSError, ValueError) as exc:
        raise Refused(f"{args.hostfile}: {exc}") from exc
    return hosts, {**os.environ, ALLOWED_HOSTS_VAR: ",".join(name for name, _ in parse_hosts(hosts))}


def _launch_ranks(args: argparse.Namespace, hosts: str | None, environ: dict[str, str]) -> int:
    """Run this same command as --np ranks under horovodrun, each rank without the launch flags."""
    from pipeline.train.launch import horovodrun_command, run_ranks

    try:
        command = horovodrun_command(args.np, hosts, [sys.executable, "-m", "pipeline", *_worker_argv(args)], environ)
    except (ValueError, FileNotFoundError) as exc:
        raise Refused(str(exc)) from exc
    print("launching: " + " ".join(command), flush=True)
    return run_ranks(command)


def _benchmark(config: TrainConfig, steps: int) -> int:
    """Time the step on synthetic data; the chief prints the result as JSON."""
    import dataclasses
    import json

    from pipeline.train.benchmark import run_benchmark
    from pipeline.train.dist import init_dist

    dist = init_dist()
    result = run_benchmark(config, steps=steps, dist=dist)
    if dist.is_chief:
        print(json.dumps(dataclasses.asdict(result)))
    return exit_codes.OK


def cmd_train(args: argparse.Namespace) -> int:
    try:
        return _train(args)
    except (Refused, Failed, Retryable):  # foreseen: main() prints the one line and exits with the kind's code
        raise
    except Exception:
        # Not foreseen (a bug, TensorFlow or NCCL giving up): Python's own exit would be 1, which the train
        # task reads as final (exit_codes.FINAL). A retry resumes from the checkpoint and may get past it.
        traceback.print_exc()
        return exit_codes.RETRY


def _train(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    from pipeline.train.dist import launched_by_horovod

    config = _train_config(args)
    if args.run_id:
        args.model_dir = _run_model_dir(args)
    if not args.benchmark and (args.data_dir is None or args.model_dir is None):
        raise Refused("--data-dir and --model-dir (or --run-id) are required (or use --benchmark)")
    hosts, environ = _hosts(args)
    if not launched_by_horovod() and (args.np > 1 or hosts):
        return _launch_ranks(args, hosts, environ)
    if args.benchmark:
        return _benchmark(config, args.benchmark_steps)
    if not args.data_dir.is_dir():  # before TensorFlow's import: a typo is reported at once
        raise Refused(f"{args.data_dir}: no such data directory")
    from pipeline.data.input import UnreadableRecordError
    from pipeline.stages.init_source import InitFrom
    from pipeline.train.loop import train

    init_from = InitFrom(args.init_from or "scratch", bucket=settings.BUCKET.get(), prefix=settings.PREFIX.get(),
                         workspace_root=args.workspace_root)
    try:
        result = train(config, args.data_dir, args.model_dir, init_from=init_from)
    except UnreadableRecordError as exc:  # a ValueError, but the data's fault found mid-run, not the arguments'
        raise Failed(str(exc)) from exc
    except (ValueError, FileNotFoundError) as exc:
        raise Refused(str(exc)) from exc
    return result.exit_code


def cmd_mpijob(args: argparse.Namespace) -> int:
    import yaml

    from pipeline.train.mpijob import training_job

    if not args.run_id or args.data_dir is None:
        raise Refused("--run-id and --data-dir are required")
    try:
        per_node = args.gpus_per_node or settings.GPUS_PER_NODE.get()
        body = training_job(args.run_id, args.workspace_root, data_dir=args.data_dir, profile=args.profile,
                            num_gpus=args.np, gpus_per_node=per_node, init_from=args.init_from,
                            **{key: getattr(args, key) for key in TRAIN_OVERRIDES})
    except ValueError as exc:
        raise Refused(str(exc)) from exc
    print(yaml.safe_dump(body, sort_keys=False), end="")
    return exit_codes.OK


def cmd_predict(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    import json

    from pipeline.predict import PredictError, predict

    if not args.model_dir.is_dir():
        raise Refused(f"{args.model_dir}: no such model directory")
    try:
        predictions = predict(args.model_dir, args.images, top_k=args.top_k)
    except PredictError as exc:  # the user's file, found while reading the inputs: exit 1
        raise Failed(str(exc)) from exc
    except (ValueError, FileNotFoundError) as exc:
        raise Refused(str(exc)) from exc
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    else:
        print("\n".join(p.line() for p in predictions))
    return exit_codes.OK


def add_train(sub: Subparsers) -> None:
    p = sub.add_parser(
        "train", parents=[recipe_flags(), workspace_flags()],
        help="train ResNet50 v1.5 with NVIDIA's recipe (Horovod, AMP, XLA); resumes from the latest checkpoint",
        description="Train ResNet50 v1.5 on DATA_DIR's train split into MODEL_DIR (or the model/ of run RUN_ID's "
        "workspace): checkpoints, metrics.jsonl, TensorBoard. A rerun resumes from the latest checkpoint; a "
        "finished run does nothing. SIGTERM saves a checkpoint and exits 143. --np N runs N ranks under "
        "horovodrun, on this machine or on the --hosts / --hostfile machines (over ssh). Exit 2 on bad arguments "
        "or missing data, 1 on a record that cannot be read, 75 (after its traceback) on a failure it did not "
        "foresee, which a retry may get past.",
    )
    p.add_argument("--model-dir", type=Path, help="where checkpoints, config.json and metrics.jsonl go")
    hosts = p.add_mutually_exclusive_group()
    hosts.add_argument("--hosts", help="horovodrun hosts, e.g. node1:8,node2:8 (default: localhost:NP); hosts other "
                       f"than localhost must be listed in {settings.ALLOWED_HOSTS.name}")
    hosts.add_argument("--hostfile", type=Path, help="an MPI hostfile ('host slots=N' per line) naming the hosts, "
                       "as an MPIJob's launcher has at /etc/mpi/hostfile: the hosts the cluster gave this job")
    p.add_argument("--benchmark", action="store_true", help="time the step on synthetic data; print img/s as JSON")
    p.add_argument("--benchmark-steps", type=positive_int, default=50)
    p.set_defaults(func=cmd_train)


def add_mpijob(sub: Subparsers) -> None:
    p = sub.add_parser(
        "mpijob", parents=[recipe_flags(), workspace_flags()],
        help="print the MPIJob (Kubernetes) that trains a run, as the train task submits it with launcher=kubernetes",
        description="Print the kubeflow MPIJob that trains run RUN_ID on Kubernetes: NP ranks on worker pods of "
        "--gpus-per-node GPUs, whose launcher runs `rn50 train --hostfile`. The workspace root and DATA_DIR must "
        "be on the shared volume. Namespace, image, claim and requests are the RN50_K8S_* and RN50_TRAINER_IMAGE "
        "settings (`rn50 settings`). --run-id and --data-dir are required. Nothing is submitted: pipe it to "
        "`kubectl apply -f -`.",
    )
    p.add_argument("--gpus-per-node", type=positive_int,
                   help=f"GPUs per worker pod (default {setting_default(settings.GPUS_PER_NODE)})")
    p.set_defaults(func=cmd_mpijob)


def add_predict(sub: Subparsers) -> None:
    p = sub.add_parser(
        "predict",
        help="the top-k ImageNet classes of JPEG or PNG files",
        description="Classify each IMAGE with MODEL_DIR's latest checkpoint (a trained or imported model "
        "directory, or a version fetched by `rn50 pull`), preprocessed as NVIDIA's evaluation does at the "
        "model's image size. One line per image: index, synset, name and probability of each of the top "
        "K classes; --json prints a list of {image, top: [{index, synset, name, probability}]}. Exit 1, "
        "naming the file, on a file that is not a JPEG or PNG image.",
    )
    p.add_argument("images", metavar="IMAGE", nargs="+", help="JPEG or PNG files")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--top-k", type=positive_int, default=5, help="classes per image (default 5)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of lines")
    p.set_defaults(func=cmd_predict)
