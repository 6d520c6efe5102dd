"""What more than one command group uses: the flags several subcommands take (defined once, each subcommand
takes the groups it needs through `parents=`), the argument types, and the TensorFlow quieting.

Imported by `build_parser`, so by `rn50 --help`: nothing heavy at the top.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline import settings
from pipeline.contracts.registry import MODEL
from pipeline.recipe import PROFILES
from pipeline.settings import Setting

# What add_subparsers returns; argparse exports no public name for it. Each group's add_X(sub) adds subcommand X.
Subparsers = argparse._SubParsersAction


def quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter would bury the one line a user needs to read.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def setting_default(setting: Setting) -> str:
    """How --help shows a default that comes from a setting: its variable, and the default without it."""
    if setting.default is None:
        return f"${setting.name}, if set"
    return f"${setting.name}, else {setting.default_text}"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of days, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 days, not {text}")
    return value


def data_dir_flag() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("data_dir", metavar="DATA_DIR", type=Path, help="directory of train-*/validation-* shards")
    return p


def model_flags() -> argparse.ArgumentParser:
    """Which model in the registry: s3://BUCKET/PREFIX/MODEL/vNNNN/."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--prefix", default=settings.PREFIX.get(),
                   help=f"key prefix (default {setting_default(settings.PREFIX)})")
    p.add_argument("--model", default=MODEL, help=f"model name under the prefix (default {MODEL})")
    return p


def registry_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, parents=[model_flags()])
    p.add_argument("--bucket", default=settings.BUCKET.get(),
                   help=f"registry bucket (default {setting_default(settings.BUCKET)})")
    return p


def workspace_root_flag() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--workspace-root", type=Path, default=settings.WORKSPACE_ROOT.get(),
                   help=f"where run workspaces live (default {setting_default(settings.WORKSPACE_ROOT)})")
    return p


def workspace_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, parents=[workspace_root_flag()])
    p.add_argument("--run-id", help="the run whose workspace to use (an Airflow run id): its model/ is the model dir")
    return p


def recipe_flags() -> argparse.ArgumentParser:
    """What a training run is: data, profile, ranks and overrides of the profile (None keeps its value)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--data-dir", type=Path, help="directory of train-*/validation-* shards")
    p.add_argument("--profile", default=settings.PROFILE.default, choices=tuple(PROFILES),
                   help=f"training recipe (default {settings.PROFILE.default}): smoke is the sample data at 32 px "
                   "on a CPU, ngc-* NVIDIA's recipes")
    p.add_argument("--np", type=positive_int, default=1, help="number of ranks (GPUs)")
    p.add_argument("--init-from", metavar="scratch|ngc|champion|PATH",
                   help="a new run's first weights (default scratch): NVIDIA's checkpoint "
                   f"(${settings.NGC_CHECKPOINT.name}), the registry's latest version, or a model directory; "
                   "weights only, and a run with a checkpoint of its own resumes it instead")
    overrides = p.add_argument_group("overrides of the profile")
    overrides.add_argument("--epochs", type=positive_int)
    overrides.add_argument("--batch-size", type=positive_int, help="per rank")
    overrides.add_argument("--image-size", type=positive_int)
    overrides.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision")
    overrides.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None, help="XLA-compile the step")
    overrides.add_argument("--steps", type=positive_int, help="stop after this many steps (the schedule spans them)")
    overrides.add_argument("--checkpoint-every", type=positive_int, help="steps between checkpoints")
    overrides.add_argument("--log-every", type=positive_int, help="steps between progress lines")
    overrides.add_argument("--seed", type=int)
    return p
