"""`rn50`: one subcommand per pipeline stage, and the project's only command line (`python -m pipeline`
is the same CLI). What a GPU worker, an MPIJob's launcher or a container runs is `rn50 <stage>`; the
Airflow tasks call the same library functions.

Every failure a user can cause ends in one line naming the file and the reason, and a non-zero
exit: 2 for bad arguments or input refused before the work starts, 1 for a check or a stage that ran
and failed (a gate, a record that cannot be read). Heavy libraries are imported inside the commands,
so `rn50 --help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import settings
from pipeline.gate import DEFAULT_TOLERANCE, MAX_TOLERANCE
from pipeline.publish.registry import MODEL
from pipeline.settings import Setting
from pipeline.terminal import printable
from pipeline.train.config import PROFILES

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments or unusable input: reported in one line, exit code 2."""


class Failed(Exception):
    """A stage that started and failed on its input (a record it cannot read): one line, exit code 1."""


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter would bury the one line a user needs to read.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cmd_make_sample(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from pipeline.data.describe import describe_dataset, summary_lines
    from pipeline.data.sample import MANIFEST, make_sample

    print(f"writing the sample dataset to {args.out_dir} ...", flush=True)
    try:
        make_sample(args.out_dir)
    except (FileExistsError, NotADirectoryError, PermissionError) as exc:
        raise UsageError(str(exc)) from exc
    # Read back what is on disk, so the summary is of the files, not of the intent.
    print("\n".join(summary_lines(args.out_dir, describe_dataset(args.out_dir))))
    print(f"expected counts: {args.out_dir / MANIFEST}")
    return EXIT_OK


def cmd_describe(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from pipeline.data.describe import describe_dataset, summary_lines

    try:
        stats = describe_dataset(args.data_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    print("\n".join(summary_lines(args.data_dir, stats)))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    import logging

    # Our progress lines only: the root logger stays at WARNING, or GX's INFO chatter floods stderr.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    ours = logging.getLogger("pipeline")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    import json

    from pipeline.data.drift import check_summary
    from pipeline.data.validate import validate_dataset

    try:
        baseline = None
        if args.baseline_summary is not None:
            try:
                baseline = json.loads(args.baseline_summary.read_text())
            except (OSError, ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
                raise ValueError(f"{args.baseline_summary}: {exc}") from None
            check_summary(baseline, str(args.baseline_summary))
        report = validate_dataset(
            args.data_dir,
            expect=args.expect,
            decode=args.decode,
            workers=args.workers,
            report_dir=args.report_dir,
            dali_index_dir=args.dali_index_dir,
            run_name=args.run_name,
            dataset_version=args.dataset_version,
            baseline_summary=baseline,
        )
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from exc
    for line in report.failure_lines():
        print(line)
    verdict = "valid" if report.ok else "INVALID"
    print(
        f"{args.data_dir}: {verdict}: {report.records} records in {report.shards} shards, "
        f"{report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s"
        + (f"; report: {report.report_dir}/report.json" if report.report_dir else "")
    )
    if report.gx.get("data_docs"):
        print(f"Data Docs: {report.gx['data_docs']}")
    return EXIT_OK if report.ok else EXIT_FAILED


# Overrides of the profile: CLI flag -> TrainConfig field. None (flag absent) keeps the profile's value.
TRAIN_OVERRIDES = ("epochs", "batch_size", "image_size", "amp", "xla", "steps", "checkpoint_every", "log_every", "seed")


def _train_config(args: argparse.Namespace):
    from pipeline.train.config import resolve

    try:
        return resolve(args.profile, **{k: getattr(args, k) for k in TRAIN_OVERRIDES})
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


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
        raise UsageError("give --model-dir or --run-id, not both")
    try:
        return RunWorkspace(args.workspace_root, args.run_id).create().model
    except (OSError, ValueError) as exc:
        raise UsageError(f"--run-id {args.run_id}: {exc}") from exc


def _hosts(args: argparse.Namespace) -> tuple[str | None, dict[str, str]]:
    """The ranks' hosts and the environment that allows them: --hosts must be among the deployment's
    RN50_ALLOWED_HOSTS; the hosts of a --hostfile are the ones the cluster gave this job, so it allows them."""
    if not args.hostfile:
        return args.hosts, dict(os.environ)
    from pipeline.train.launch import ALLOWED_HOSTS_VAR, parse_hostfile, parse_hosts

    try:
        hosts = parse_hostfile(args.hostfile.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{args.hostfile}: {exc}") from exc
    return hosts, {**os.environ, ALLOWED_HOSTS_VAR: ",".join(name for name, _ in parse_hosts(hosts))}


def cmd_train(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from pipeline.train.dist import launched_by_horovod

    config = _train_config(args)
    if args.run_id:
        args.model_dir = _run_model_dir(args)
    if not args.benchmark and (args.data_dir is None or args.model_dir is None):
        raise UsageError("--data-dir and --model-dir (or --run-id) are required (or use --benchmark)")
    hosts, environ = _hosts(args)
    if not launched_by_horovod() and (args.np > 1 or hosts):
        from pipeline.train.launch import horovodrun_command, run_ranks

        try:
            command = horovodrun_command(args.np, hosts, [sys.executable, "-m", "pipeline", *_worker_argv(args)],
                                         environ)
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from exc
        print("launching: " + " ".join(command), flush=True)
        return run_ranks(command)
    if args.benchmark:
        import dataclasses
        import json

        from pipeline.train.benchmark import run_benchmark
        from pipeline.train.dist import init_dist

        dist = init_dist()
        result = run_benchmark(config, steps=args.benchmark_steps, dist=dist)
        if dist.is_chief:
            print(json.dumps(dataclasses.asdict(result)))
        return EXIT_OK
    if not args.data_dir.is_dir():  # before TensorFlow's import: a typo is reported at once
        raise UsageError(f"{args.data_dir}: no such data directory")
    from pipeline.data.input import UnreadableRecordError
    from pipeline.train.loop import train
    from pipeline.train.warm_start import InitFrom

    init_from = InitFrom(args.init_from or "scratch", bucket=settings.BUCKET.get(), prefix=settings.PREFIX.get(),
                         workspace_root=args.workspace_root)
    try:
        result = train(config, args.data_dir, args.model_dir, init_from=init_from)
    except UnreadableRecordError as exc:  # a ValueError, but the data's fault found mid-run, not the arguments'
        raise Failed(str(exc)) from exc
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from exc
    return result.exit_code


def cmd_mpijob(args: argparse.Namespace) -> int:
    import yaml

    from pipeline.train.mpijob import training_job

    if not args.run_id or args.data_dir is None:
        raise UsageError("--run-id and --data-dir are required")
    try:
        per_node = args.gpus_per_node or settings.GPUS_PER_NODE.get()
        body = training_job(args.run_id, args.workspace_root, data_dir=args.data_dir, profile=args.profile,
                            num_gpus=args.np, gpus_per_node=per_node, init_from=args.init_from,
                            **{key: getattr(args, key) for key in TRAIN_OVERRIDES})
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(yaml.safe_dump(body, sort_keys=False), end="")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from pipeline.data.input import UnreadableRecordError
    from pipeline.train.evaluate import EvaluationError, evaluate, write_eval

    try:
        result = evaluate(args.data_dir, args.model_dir, batch_size=args.batch_size)
    except UnreadableRecordError as exc:
        raise Failed(str(exc)) from exc
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from exc
    except EvaluationError as exc:
        print(f"rn50 evaluate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    path = write_eval(result, args.model_dir)
    print(
        f"top-1 {result.top1_accuracy:.2f} %  top-5 {result.top5_accuracy:.2f} %  over {result.eval_count} images "
        f"({result.eval_throughput:,.1f} img/s) at step {result.step}; wrote {path}"
    )
    return EXIT_OK


def cmd_import_ngc(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from pipeline.model.ngc_import import NgcImportError, import_ngc

    try:
        result = import_ngc(args.ckpt, args.model_dir)
    except NgcImportError as exc:  # the checkpoint's fault (or an occupied output), not the command line's
        raise Failed(str(exc)) from exc
    print(f"imported {args.ckpt} (global_step {result.global_step}, {result.head} head) into {result.model_dir}; "
          f"v1.5 check: {result.stride_check}")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    import json

    from pipeline.predict import PredictError, predict

    if not args.model_dir.is_dir():
        raise UsageError(f"{args.model_dir}: no such model directory")
    try:
        predictions = predict(args.model_dir, args.images, top_k=args.top_k)
    except PredictError as exc:  # the user's file, found while reading the inputs: exit 1
        raise Failed(str(exc)) from exc
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    else:
        print("\n".join(p.line() for p in predictions))
    return EXIT_OK


def cmd_gate(args: argparse.Namespace) -> int:
    from pipeline.gate import DECISION_FILE, GateFailed, read_champion, run_gate

    champion = registry = None
    if args.bucket:
        from pipeline.publish.store import make_client

        try:
            champion, registry = read_champion(make_client(), args.bucket, args.prefix, args.model)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        except Exception as exc:  # the registry unreachable or its latest tampered: one line, not a traceback
            print(printable(f"rn50 gate: cannot read the champion from s3://{args.bucket}/{args.prefix}: {exc}"),
                  file=sys.stderr)
            return EXIT_FAILED
    try:
        decision = run_gate(
            args.model_dir, profile=args.profile, champion=champion, baseline_dir=args.baseline,
            tolerance=args.tolerance, force_publish=args.force_publish, force_reason=args.force_reason,
            registry=registry,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    except GateFailed as exc:
        decision = exc.decision
    for reason in decision.reasons:  # they quote the champion's and the baseline's records
        print(printable(reason))
    verdict = decision.verdict.upper() + (" (publish forced)" if decision.force_publish and decision.publish else "")
    print(f"gate: {verdict}; decision: {args.model_dir / DECISION_FILE}")
    return EXIT_OK if decision.publish else EXIT_FAILED


def _publish_logging() -> None:
    """Progress of publish/pull on stderr (stdout is kept for the URI a script reads), credentials redacted."""
    import logging

    from pipeline.publish.redact import redact

    class Redacting(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.msg, record.args = printable(redact(record.getMessage())), None
            return True

    ours = logging.getLogger("pipeline.publish")
    if not ours.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(Redacting())
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = False


def _registry_failure(command: str, exc: BaseException) -> int:
    """An S3, integrity or registry failure: one line (already free of credentials), exit 1."""
    from pipeline.publish.redact import redact

    print(f"rn50 {command}: error: {printable(redact(' '.join(str(exc).split())))}", file=sys.stderr)
    return EXIT_FAILED


def cmd_publish(args: argparse.Namespace) -> int:
    _publish_logging()
    from pipeline.publish.dvc_pointer import DvcError
    from pipeline.publish.publish import PublishError, PublishRefused, publish_model, read_decision
    from pipeline.publish.registry import RegistryError
    from pipeline.publish.store import StoreError, make_client
    from pipeline.publish.upload import ConflictError

    if not args.model_dir.is_dir():
        raise UsageError(f"{args.model_dir}: no such model directory")
    if args.validation_report is not None and not args.validation_report.is_file():
        raise UsageError(f"{args.validation_report}: no such validation report")
    try:
        read_decision(args.model_dir)  # refuse before spending seconds on the export
    except PublishRefused as exc:
        return _registry_failure("publish", exc)
    if args.export:
        _quiet_tensorflow()
        try:
            from pipeline.train.export import export_serving

            export_serving(args.model_dir)
        except ImportError as exc:
            raise UsageError(f"cannot export model.keras and saved_model/ ({exc}); --no-export publishes without "
                             "them") from exc
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
    facts = (("hosts", args.hosts), ("num_gpus", args.num_gpus))
    lineage: dict[str, object] = {k: v for k, v in facts if v is not None}
    if args.data_dir is not None:
        if not args.data_dir.is_dir():
            raise UsageError(f"--data-dir {args.data_dir}: no such directory")
        from pipeline.fetch import data_dir_record

        dataset = data_dir_record(args.data_dir)
        lineage |= {"dataset_version": dataset["dataset_version"], "dataset": dataset}
    try:
        result = publish_model(
            args.model_dir, client=make_client(), bucket=args.bucket, prefix=args.prefix, model=args.model,
            run_id=args.run_id, lineage=lineage or None, dvc_repo=args.dvc_repo,
            extra_files={"report.json": args.validation_report} if args.validation_report else None,
        )
    except PublishRefused as exc:
        return _registry_failure("publish", exc)
    except (PublishError, DvcError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    except (StoreError, RegistryError, ConflictError) as exc:
        return _registry_failure("publish", exc)
    top1 = result.manifest.get("metrics", {}).get("top1_accuracy")
    print(printable(f"published {result.version} (top-1 {top1} %, {result.bytes / 1e6:.1f} MB); latest is "
                    f"{result.latest}"),
          file=sys.stderr)
    print(printable(result.uri))
    return EXIT_OK


def _short_dataset(value: object) -> str:
    """A dataset version in 12 columns: a DVC md5's first 12 digits (as a short git sha), dir:<fingerprint>."""
    from pipeline.fetch import UNVERSIONED

    text = "-" if value is None else str(value)
    return ("dir:" + text.removeprefix(UNVERSIONED) if text.startswith(UNVERSIONED) else text)[:12]


def cmd_list(args: argparse.Namespace) -> int:
    _publish_logging()
    from pipeline.publish.registry import RegistryError, list_versions, model_prefix, read_latest, version_summary
    from pipeline.publish.store import Store, StoreError, make_client

    try:
        store = Store(make_client(), args.bucket)
        manifests = list_versions(store, args.bucket, args.prefix, args.model)
        latest = (read_latest(store, args.prefix, args.model)[0] or {}).get("version")
        base = f"s3://{args.bucket}/{model_prefix(args.prefix, args.model)}"
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    except (StoreError, RegistryError) as exc:
        return _registry_failure("list", exc)
    versions = [version_summary(m, latest) for m in manifests]
    if args.json:
        import json

        print(json.dumps(versions, indent=2))
        return EXIT_OK
    if not versions:
        print(f"no published versions under {printable(base)}")
        return EXIT_OK

    def percent(value: object) -> str:
        return f"{value:.2f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"

    # Within 120 columns: the date without its time (--json has it), and the report's URI under the registry's,
    # which the last line names once.
    rows = [("VERSION", "DATE (UTC)", "TOP-1 %", "TOP-5 %", "BASELINE PASSED", "GATE", "DATASET", "REPORT")]
    for v in versions:
        report = v["report"].removeprefix(base) if v["report"] else "-"
        cells = (str(v["version"]), str(v["created_at"] or "")[:10], percent(v["top1_accuracy"]),
                 percent(v["top5_accuracy"]), v["baseline"] or "-", f"{v['verdict']}{' forced' * v['forced']}",
                 _short_dataset(v["dataset_version"]), report + ("  latest" if v["latest"] else ""))
        rows.append(tuple(printable(c) for c in cells))  # manifest text: never a command to the terminal
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        # The figures right-aligned; the last column (no width: nothing follows it) as it is.
        cells = [c.rjust(w) if i in (2, 3) else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))]
        print("  ".join([*cells, row[-1]]))
    print(f"REPORT is under {printable(base)}")
    return EXIT_OK


def cmd_pull(args: argparse.Namespace) -> int:
    _publish_logging()
    from pipeline.publish.pull import IntegrityError, pull_version
    from pipeline.publish.registry import RegistryError
    from pipeline.publish.store import StoreError, make_client

    try:
        result = pull_version(make_client(), args.bucket, args.dest, prefix=args.prefix, model=args.model,
                              version=args.version)
    except (FileExistsError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    except (IntegrityError, StoreError, RegistryError) as exc:
        return _registry_failure("pull", exc)
    print(printable(f"pulled {result.version} into {result.dest}: {result.files} files, {result.bytes / 1e6:.1f} MB, "
                    "every sha256 verified against the manifest"))
    return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    from pipeline.workspace import gc

    root = args.workspace_root
    try:
        removals = gc(root, args.older_than, dry_run=args.dry_run)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    for removal in removals:
        print(removal.describe(args.dry_run), file=sys.stderr if removal.error else sys.stdout)
    freed = sum(r.bytes for r in removals if not r.error) / 1e9
    done = len([r for r in removals if not r.error])
    print(f"{root}: {done} workspace(s) idle for {args.older_than:g}+ days "
          f"{'would be removed' if args.dry_run else 'removed'}, {freed:.2f} GB")
    return EXIT_FAILED if any(r.error for r in removals) else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.report import REPORT_DIR, build_report

    if not args.model_dir.is_dir():
        raise UsageError(f"{args.model_dir}: no such model directory")
    out = args.out or args.model_dir / REPORT_DIR
    try:
        index = build_report(out, model_dir=args.model_dir, title=f"ResNet50 v1.5 report: {args.model_dir}")
    except OSError as exc:  # OUT is a file, read-only, or the disk is full
        raise UsageError(f"{out}: cannot write the report ({exc.strerror or exc})") from exc
    print(index)
    return EXIT_OK


def cmd_settings(args: argparse.Namespace) -> int:
    try:
        values = settings.resolved()
    except settings.SettingError as exc:
        raise Failed(str(exc)) from exc
    rows = [("SETTING", "VALUE", "FROM", "MEANING")]
    for setting in settings.SETTINGS:
        value = values[setting.name]
        text = ",".join(value) if isinstance(value, tuple) else "(none)" if value is None else str(value)
        rows.append((setting.name, text or "(none)", "env" if os.environ.get(setting.name, "").strip() else "default",
                     setting.help))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[3])
    return EXIT_OK


def _positive_days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of days, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 days, not {text}")
    return value


def _gx_name(text: str) -> str:
    from pipeline.data.gx_suite import check_name

    try:
        return check_name(text, "name")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _setting_default(setting: Setting) -> str:
    """How --help shows a default that comes from a setting: its variable, and the default without it."""
    if setting.default is None:
        return f"${setting.name}, if set"
    return f"${setting.name}, else {setting.default_text}"


# Shared flags, defined once; each subcommand takes the groups it needs through `parents=`.


def _data_dir_flag() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("data_dir", metavar="DATA_DIR", type=Path, help="directory of train-*/validation-* shards")
    return p


def _model_flags() -> argparse.ArgumentParser:
    """Which model in the registry: s3://BUCKET/PREFIX/MODEL/vNNNN/."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--prefix", default=settings.PREFIX.get(),
                   help=f"key prefix (default {_setting_default(settings.PREFIX)})")
    p.add_argument("--model", default=MODEL, help=f"model name under the prefix (default {MODEL})")
    return p


def _registry_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, parents=[_model_flags()])
    p.add_argument("--bucket", default=settings.BUCKET.get(),
                   help=f"registry bucket (default {_setting_default(settings.BUCKET)})")
    return p


def _workspace_root_flag() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--workspace-root", type=Path, default=settings.WORKSPACE_ROOT.get(),
                   help=f"where run workspaces live (default {_setting_default(settings.WORKSPACE_ROOT)})")
    return p


def _workspace_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, parents=[_workspace_root_flag()])
    p.add_argument("--run-id", help="the run whose workspace to use (an Airflow run id): its model/ is the model dir")
    return p


def _recipe_flags() -> argparse.ArgumentParser:
    """What a training run is: data, profile, ranks and overrides of the profile (None keeps its value)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--data-dir", type=Path, help="directory of train-*/validation-* shards")
    p.add_argument("--profile", default=settings.PROFILE.default, choices=tuple(PROFILES),
                   help=f"training recipe (default {settings.PROFILE.default}): smoke is the sample data at 32 px "
                   "on a CPU, ngc-* NVIDIA's recipes")
    p.add_argument("--np", type=_positive_int, default=1, help="number of ranks (GPUs)")
    p.add_argument("--init-from", metavar="scratch|ngc|champion|PATH",
                   help="a new run's first weights (default scratch): NVIDIA's checkpoint "
                   f"(${settings.NGC_CHECKPOINT.name}), the registry's latest version, or a model directory; "
                   "weights only, and a run with a checkpoint of its own resumes it instead")
    overrides = p.add_argument_group("overrides of the profile")
    overrides.add_argument("--epochs", type=_positive_int)
    overrides.add_argument("--batch-size", type=_positive_int, help="per rank")
    overrides.add_argument("--image-size", type=_positive_int)
    overrides.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision")
    overrides.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None, help="XLA-compile the step")
    overrides.add_argument("--steps", type=_positive_int, help="stop after this many steps (the schedule spans them)")
    overrides.add_argument("--checkpoint-every", type=_positive_int, help="steps between checkpoints")
    overrides.add_argument("--log-every", type=_positive_int, help="steps between progress lines")
    overrides.add_argument("--seed", type=int)
    return p


# One parser per subcommand: add_X(sub) adds subcommand X.
Subparsers = argparse._SubParsersAction  # argparse exports no public name for add_subparsers' result


def add_make_sample(sub: Subparsers) -> None:
    p = sub.add_parser(
        "make-sample",
        help="write the generated 10-class sample dataset in ImageNet TFRecord format",
        description="Write a small, deterministic dataset in exactly the ImageNet TFRecord format "
        "(10 real classes, train and validation shards, manifest.json). The pipeline's smoke "
        "profile trains on it in minutes on a CPU.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", type=Path,
                   help="directory to write (created; must hold no other files)")
    p.set_defaults(func=cmd_make_sample)


def add_describe(sub: Subparsers) -> None:
    p = sub.add_parser(
        "describe", parents=[_data_dir_flag()],
        help="count the records of an ImageNet TFRecord directory per split and label",
        description="Read every shard in DATA_DIR and print records per split and per label, "
        "with the JPEG quirks found (grayscale, progressive, EXIF) and the records with boxes.",
    )
    p.set_defaults(func=cmd_describe)


def add_validate(sub: Subparsers) -> None:
    p = sub.add_parser(
        "validate", parents=[_data_dir_flag()],
        help="check every record of an ImageNet TFRecord directory before training on it",
        description="Check shard names and completeness, every frame's CRCs, the Example schema, labels, "
        "JPEG headers, boxes, counts and duplicates. Exit 0 when valid, 1 when a rule fails, 2 on bad usage.",
    )
    # pipeline.data.validate's Expect and Decode: importing it here would cost every command a second (pandas).
    p.add_argument("--expect", choices=("imagenet", "sample", "none"), default="none",
                   help="expected counts: real ILSVRC-2012, the sample's manifest.json, or none (default)")
    p.add_argument("--decode", choices=("header", "full"), default="header",
                   help="header: check JPEG markers and SOF dimensions (fast, default); full: also decode every image")
    p.add_argument("--workers", type=_positive_int, default=1, help="processes reading shards in parallel")
    p.add_argument("--report-dir", type=Path, help="write report.json, the GX result and Data Docs here")
    p.add_argument("--dali-index-dir", type=Path, help="write one DALI tfrecord2idx index file per shard here")
    p.add_argument("--run-name", type=_gx_name, help="name the Great Expectations run (e.g. the Airflow run id)")
    p.add_argument("--dataset-version", type=_gx_name,
                   help="the data's version (summary.json records it; the GX data asset is named after it)")
    p.add_argument("--baseline-summary", type=Path, metavar="FILE",
                   help="another dataset's summary.json (e.g. the champion's data_summary.json): the Data Docs "
                   "then show its image-size quantile expectations")
    p.set_defaults(func=cmd_validate)


def add_train(sub: Subparsers) -> None:
    p = sub.add_parser(
        "train", parents=[_recipe_flags(), _workspace_flags()],
        help="train ResNet50 v1.5 with NVIDIA's recipe (Horovod, AMP, XLA); resumes from the latest checkpoint",
        description="Train ResNet50 v1.5 on DATA_DIR's train split into MODEL_DIR (or the model/ of run RUN_ID's "
        "workspace): checkpoints, metrics.jsonl, TensorBoard. A rerun resumes from the latest checkpoint; a "
        "finished run does nothing. SIGTERM saves a checkpoint and exits 143. --np N runs N ranks under "
        "horovodrun, on this machine or on the --hosts / --hostfile machines (over ssh). Exit 2 on bad arguments "
        "or missing data, 1 on a record that cannot be read.",
    )
    p.add_argument("--model-dir", type=Path, help="where checkpoints, config.json and metrics.jsonl go")
    hosts = p.add_mutually_exclusive_group()
    hosts.add_argument("--hosts", help="horovodrun hosts, e.g. node1:8,node2:8 (default: localhost:NP); hosts other "
                       f"than localhost must be listed in {settings.ALLOWED_HOSTS.name}")
    hosts.add_argument("--hostfile", type=Path, help="an MPI hostfile ('host slots=N' per line) naming the hosts, "
                       "as an MPIJob's launcher has at /etc/mpi/hostfile: the hosts the cluster gave this job")
    p.add_argument("--benchmark", action="store_true", help="time the step on synthetic data; print img/s as JSON")
    p.add_argument("--benchmark-steps", type=_positive_int, default=50)
    p.set_defaults(func=cmd_train)


def add_mpijob(sub: Subparsers) -> None:
    p = sub.add_parser(
        "mpijob", parents=[_recipe_flags(), _workspace_flags()],
        help="print the MPIJob (Kubernetes) that trains a run, as the train task submits it with launcher=kubernetes",
        description="Print the kubeflow MPIJob that trains run RUN_ID on Kubernetes: NP ranks on worker pods of "
        "--gpus-per-node GPUs, whose launcher runs `rn50 train --hostfile`. The workspace root and DATA_DIR must "
        "be on the shared volume. Namespace, image, claim and requests are the RN50_K8S_* and RN50_TRAINER_IMAGE "
        "settings (`rn50 settings`). --run-id and --data-dir are required. Nothing is submitted: pipe it to "
        "`kubectl apply -f -`.",
    )
    p.add_argument("--gpus-per-node", type=_positive_int,
                   help=f"GPUs per worker pod (default {_setting_default(settings.GPUS_PER_NODE)})")
    p.set_defaults(func=cmd_mpijob)


def add_evaluate(sub: Subparsers) -> None:
    p = sub.add_parser(
        "evaluate",
        help="top-1/top-5 of the latest checkpoint over every validation record; writes eval.json",
        description="Restore MODEL_DIR's latest checkpoint and score every record of DATA_DIR's validation "
        "split exactly once (resize to size*256/224, centre crop). Writes eval.json and a metrics.jsonl line. "
        "Exit 1 on a record that cannot be read.",
    )
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--batch-size", type=_positive_int, help="default: the training batch size")
    p.set_defaults(func=cmd_evaluate)


def add_import_ngc(sub: Subparsers) -> None:
    p = sub.add_parser(
        "import-ngc",
        help="make a model directory from NVIDIA's NGC ResNet50 v1.5 TensorFlow checkpoint",
        description="Map every variable of NVIDIA's TF1 checkpoint (DeepLearningExamples' ConvNets resnet50) onto "
        "our ResNet50 v1.5 and write MODEL_DIR (config.json with the source's path, sha256s and global_step, "
        "checkpoints/), which evaluate, predict, gate and publish take like a trained one. Output 1000, the "
        f"Momentum slots and global_step are left out. Exit {EXIT_FAILED}, in one line naming the file or variable, "
        "on a missing, extra, misshapen or unreadable variable, a global_step that is no step, a v1 graph, a file "
        "that is not a checkpoint, or a MODEL_DIR that is not empty.",
    )
    p.add_argument("ckpt", metavar="CKPT", type=Path,
                   help="the unpacked NGC checkpoint directory (with its `checkpoint` file) or a checkpoint prefix")
    p.add_argument("model_dir", metavar="MODEL_DIR", type=Path, help="directory to write (new, or empty)")
    p.set_defaults(func=cmd_import_ngc)


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
    p.add_argument("--top-k", type=_positive_int, default=5, help="classes per image (default 5)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of lines")
    p.set_defaults(func=cmd_predict)


def add_gate(sub: Subparsers) -> None:
    p = sub.add_parser(
        "gate", parents=[_model_flags()],
        help="pass or fail a trained model against the NGC floor and a live baseline measured on the same data",
        description="Read MODEL_DIR/eval.json, compare top-1 with the profile's floor (NGC's figure, or the smoke "
        "floor) minus a tolerance, and with the live baseline's (--baseline: another model evaluated on the same "
        "data) minus the same tolerance; the record counts must be equal. --bucket records the current `latest` "
        "version; its recorded number decides nothing. Always writes MODEL_DIR/decision.json. Exit 0 to "
        "publish, 1 when the model fails the gate.",
    )
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--profile", choices=tuple(PROFILES), help="default: from config.json")
    bound = f"at most {MAX_TOLERANCE:g} unless --force-publish"
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"percentage points below the floor and the live baseline ({DEFAULT_TOLERANCE:g}; {bound})")
    p.add_argument("--baseline", type=Path, metavar="DIR",
                   help="the live baseline: DIR/eval.json of another model on the same data (`rn50 evaluate` of a "
                   "version `rn50 pull` fetched, of `rn50 import-ngc`'s model or of any model directory, or the DAG's "
                   "baseline/)")
    p.add_argument("--force-publish", action="store_true", help="publish even if the gate fails (needs a reason)")
    p.add_argument("--force-reason", help="why the failing model is published anyway; recorded in the manifest")
    # Not the registry's --bucket default: without --bucket the gate reads no registry at all.
    p.add_argument("--bucket", help="registry bucket: record its `latest` version (the champion) in the decision")
    p.set_defaults(func=cmd_gate)


def add_publish(sub: Subparsers) -> None:
    p = sub.add_parser(
        "publish", parents=[_registry_flags()],
        help="publish a gated model directory as the next immutable version in S3 (and a DVC pointer)",
        description="Upload MODEL_DIR (latest checkpoint, model.keras, eval.json, decision.json, metrics.jsonl, "
        "config.json, and the validation report) as s3://BUCKET/PREFIX/MODEL/vNNNN/, manifest.json last, then "
        "move latest.json. Refuses a model the gate did not pass. A retry with the same --run-id resumes the "
        "same version. Credentials and endpoint come from the standard AWS environment (AWS_ENDPOINT_URL, ...). "
        "Prints the version's URI.",
    )
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--run-id", help="identifies this publish across retries (default: from the files' names, "
                   "sizes and times)")
    p.add_argument("--validation-report", type=Path, help="the data validation's report.json, stored as report.json")
    p.add_argument("--dvc-repo", type=Path, default=settings.DVC_REPO.get(),
                   help="registry repo for models/MODEL.dvc, committed and tagged MODEL@vNNNN when it is a git repo "
                   f"(default {_setting_default(settings.DVC_REPO)})")
    p.add_argument("--export", action=argparse.BooleanOptionalAction, default=True,
                   help="write model.keras, saved_model/ and labels.txt from the latest checkpoint first (default: "
                   "yes; needs TensorFlow); with --no-export, an export older than the checkpoint is refused")
    p.add_argument("--hosts", help="training hosts, recorded in the manifest")
    p.add_argument("--num-gpus", type=_positive_int, help="GPUs the model trained on, recorded in the manifest")
    p.add_argument("--data-dir", type=Path, help="the data the model trained on, when data.dvc does not pin it: "
                   "recorded as 'unversioned:' and a fingerprint of its files (default: the md5 data.dvc pins)")
    p.set_defaults(func=cmd_publish)


def add_list(sub: Subparsers) -> None:
    p = sub.add_parser(
        "list", parents=[_registry_flags()],
        help="list the published versions: top-1/top-5, baseline passed, gate, dataset, date, report",
        description="One line per complete version (one with a manifest), oldest first: top-1 and top-5 (%), the "
        "live baseline its gate measured it against (champion vNNNN, ngc, or none: the floor alone), the gate's "
        "verdict and whether publishing was forced, the dataset version (12 characters), and its run report "
        "(report/index.html) when the version holds one. The one latest.json names is marked `latest`. Versions "
        "still being uploaded are not shown.",
    )
    p.add_argument("--json", action="store_true", help="print the versions as a JSON array (full URIs and versions)")
    p.set_defaults(func=cmd_list)


def add_pull(sub: Subparsers) -> None:
    p = sub.add_parser(
        "pull", parents=[_registry_flags()],
        help="download a published version into DEST, verifying every file's sha256",
        description="Download VERSION (default: latest) into DEST (which must not exist, or be empty), checking "
        "every file's size and sha256 against the manifest. Any mismatch (a tampered or truncated object) "
        "fails the pull and leaves DEST untouched. Exit 1 on a refused or failed pull.",
    )
    p.add_argument("dest", metavar="DEST", type=Path)
    p.add_argument("--version", default="latest", help="vNNNN or latest (default)")
    p.set_defaults(func=cmd_pull)


def add_gc(sub: Subparsers) -> None:
    p = sub.add_parser(
        "gc", parents=[_workspace_root_flag()],
        help="remove the run workspaces idle for DAYS (their data copies, checkpoints and reports)",
        description="Remove each run workspace under the workspace root in which nothing changed for DAYS days "
        "(a run in progress writes its workspace, so it is kept). Only folders the pipeline made as run "
        "workspaces are removed: the shared DVC cache (.dvc-cache) and anything else in the root stay. "
        "Published versions are in S3 and are not touched. Exit 1 when a workspace could not be removed.",
    )
    p.add_argument("--older-than", metavar="DAYS", type=_positive_days, required=True,
                   help="days since anything in the workspace changed (fractions allowed)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    p.set_defaults(func=cmd_gc)


def add_report(sub: Subparsers) -> None:
    p = sub.add_parser(
        "report",
        help="make the run report (index.html and its figures) for a model directory or a pulled version",
        description="Write OUT/index.html and its PNGs from what MODEL_DIR holds (a trained model directory, or a "
        "version `rn50 pull` fetched): metrics.jsonl, eval.json, decision.json, report.json (the data "
        "validation) and the manifest's cost. Whatever is missing shows as not available. Prints the index.html "
        "path; no TensorFlow needed.",
    )
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, help="where to write it (default: MODEL_DIR/report)")
    p.set_defaults(func=cmd_report)


def add_settings(sub: Subparsers) -> None:
    p = sub.add_parser(
        "settings",
        help="print every RN50_* setting: its value here, where it came from, and what it means",
        description="Print each setting of pipeline/settings.py with the value this environment resolves it to "
        "(`env` when set, else the default). Exit 1, naming the variable, when one does not parse.",
    )
    p.set_defaults(func=cmd_settings)


SUBCOMMANDS = (add_make_sample, add_describe, add_validate, add_train, add_mpijob, add_evaluate, add_import_ngc,
               add_predict, add_gate, add_publish, add_list, add_pull, add_report, add_gc, add_settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rn50",
        description="Keep a ResNet50 v1.5 ImageNet classifier fresh: data, training, gate, publish.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as exc:  # messages may quote a manifest or a record: printable
        print(f"rn50 {args.command}: error: {printable(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Failed as exc:
        print(f"rn50 {args.command}: error: {printable(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"rn50 {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `rn50 list | head`: the reader has gone, which is not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
