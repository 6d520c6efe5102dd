"""Benchmark: what a warm start buys. Steps for a fine-tune from the champion to reach the top-1 of a
from-scratch run on shifted data, as a fraction of the from-scratch run's steps.

The run, all on one rank of this machine (docs/ngc.md has the figures and what they do not say):
  (b) shift      a copy of the sample with --recolour's classes' images recoloured (colour channels
                 rotated, RGB -> GBR: a hue turned by a third of a turn; pipeline/data/shift.py), in our
                 TFRecord format with the same labels, train and validation splits alike (made
                 first: a label the sample lacks is refused before anything trains);
  (a) champion   the smoke recipe from scratch on the sample (--data-dir), or --champion DIR;
  (0) step 0     the champion evaluated on the shifted validation split: how much the shift hurt;
  (c) scratch    the smoke recipe from scratch on the shifted data: S steps, top-1 T;
  (d) fine-tune  from the champion's weights (`rn50 train --init-from DIR`'s code path) on the shifted
                 data: the smoke recipe with the finetune profile's changes scaled to it (the peak LR
                 times --finetune-lr-scale, by default the profile's tenth, though on the sample only
                 smoke's own LR catches up with the scratch run: docs/ngc.md; 1 warmup epoch;
                 --finetune-epochs epochs), a checkpoint every --eval-every
                 steps, all kept. Each is evaluated in step order, exactly as `rn50 evaluate` scores a
                 model directory (pipeline.train.evaluate.evaluate on a directory whose checkpoint state
                 file names that one checkpoint), until one reaches T; then the last one.
Printed: S, T, the step reaching T and its fraction of S, the fine-tune's final top-1, the wall time
of each phase. Every phase writes under --work (default runs/bench-warm-start, gitignored) and a
rerun resumes what is there (a finished training does nothing; the fine-tune's directory is named by
its recipe, so trying another --finetune-* retrains only the fine-tune); --fresh starts over. The
fine-tune's directory, every checkpoint kept (about 8 GB at the defaults), is removed at the end
unless --keep-finetune; the champion and the scratch run keep 3 checkpoints each (about 1.2 GB in all).

It takes about 25 min on the 2-core development machine (three trainings of a few hundred steps),
so it is not part of `make bench`:

    .venv/bin/python bench/warm_start.py [--data-dir data/imagenet] [--recolour 1,501] [--seed 1]
        [--champion MODEL_DIR] [--finetune-epochs 10] [--finetune-lr-scale 0.1] [--eval-every 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow (and every module importing it) only once the arguments parse: --help and a bad option answer at once.
from pipeline.contracts.names import CONFIG_FILE
from pipeline.recipe import TrainConfig, get_profile

KEEP_ALL = 1_000_000  # keep_checkpoints: every fine-tune checkpoint stays until it is evaluated


def labels_arg(text: str) -> list[int]:
    try:
        labels = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give record labels separated by commas, e.g. 1,501") from None
    if not labels or any(not 1 <= label <= 1000 for label in labels):
        raise argparse.ArgumentTypeError(f"{text!r}: labels are 1..1000")
    return labels


def positive(kind: type) -> Callable[[str], int | float]:
    """An argparse type: a number above 0."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
        return value

    return parse


def checkpoint_view(checkpoint: str, model_dir: Path, views: Path) -> Path:
    """A model directory whose `checkpoint` state file names this one checkpoint (of model_dir), so
    `evaluate` scores exactly it; the checkpoint's files are not copied."""
    from pipeline.contracts.names import CHECKPOINT_DIR

    view = views / Path(checkpoint).name
    (view / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_dir / CONFIG_FILE, view / CONFIG_FILE)
    path = Path(checkpoint).resolve()
    (view / CHECKPOINT_DIR / "checkpoint").write_text(  # a CheckpointState text proto, as TensorFlow writes it
        f'model_checkpoint_path: "{path}"\nall_model_checkpoint_paths: "{path}"\n')
    return view


def kept_checkpoints(model_dir: Path) -> list[str]:
    """Every checkpoint the state file lists, oldest first."""
    import tensorflow as tf

    from pipeline.contracts.names import CHECKPOINT_DIR

    state = tf.train.get_checkpoint_state(str(model_dir / CHECKPOINT_DIR))
    return list(state.all_model_checkpoint_paths) if state else []


class Clock:
    """Wall time per phase, printed with what the phase found as it ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def phase(self, key: str, found: str, started: float) -> None:
        self.seconds[key] = time.perf_counter() - started
        print(f"-- ({key}) {found} [{self.seconds[key]:.0f} s]", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data/imagenet"), help="the sample (make sample)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-warm-start"), help="where every phase writes")
    parser.add_argument("--recolour", type=labels_arg, default=[1, 501], help="labels whose images are recoloured")
    parser.add_argument("--champion", type=Path, help="a trained model directory to use instead of training (a)")
    parser.add_argument("--seed", type=positive(int), default=get_profile("smoke").seed, help="data order")
    parser.add_argument("--finetune-epochs", type=positive(int), default=10)
    parser.add_argument("--finetune-lr-scale", type=positive(float), default=0.1, help="of the smoke recipe's LR")
    parser.add_argument("--eval-every", type=positive(int), default=10, help="steps between fine-tune checkpoints")
    parser.add_argument("--fresh", action="store_true", help="remove --work first")
    parser.add_argument("--keep-finetune", action="store_true",
                        help="keep the fine-tune's directory (every checkpoint: about 8 GB at the defaults)")
    args = parser.parse_args()
    if not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir}: no such directory (make sample writes data/imagenet)")
    from pipeline.contracts.names import CHECKPOINT_DIR
    from pipeline.data.input import count_records

    if args.champion and not (args.champion / CHECKPOINT_DIR).is_dir():
        parser.error(f"--champion {args.champion}: not a model directory (no {CHECKPOINT_DIR}/)")
    try:
        for split in ("train", "validation"):
            count_records(args.data_dir, split)
    except (OSError, ValueError) as exc:
        parser.error(f"--data-dir {args.data_dir}: {' '.join(str(exc).split())}")
    if args.fresh:
        shutil.rmtree(args.work, ignore_errors=True)
    try:
        run(args)
    except (OSError, ValueError, RuntimeError) as exc:  # one line naming what failed, not a traceback
        print(f"bench/warm_start.py: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> None:
    from pipeline.data.shift import recolour_copy
    from pipeline.stages.init_source import InitFrom
    from pipeline.train.evaluate import evaluate
    from pipeline.train.loop import train

    work, clock = args.work, Clock()
    smoke = get_profile("smoke").replace(seed=args.seed)
    print(f"{os.cpu_count()} CPUs, 1 rank; smoke recipe: {smoke.epochs} epochs of batch {smoke.batch_size} at "
          f"{smoke.image_size} px, LR {smoke.base_lr} per {smoke.lr_batch_denominator} images, "
          f"{smoke.warmup_epochs:g} warmup epochs, seed {args.seed}", flush=True)

    started = time.perf_counter()
    # Everything trained on the shifted data lives under the shift's own name, never mixed with another's.
    shift = work / ("recolour-" + "-".join(map(str, args.recolour)))
    shifted = shift / "data"
    if shifted.is_dir():
        found = "made by an earlier run"
    else:
        partial = shift / ".data.partial"  # renamed into place once whole
        shutil.rmtree(partial, ignore_errors=True)
        found = f"recoloured records {recolour_copy(args.data_dir, partial, args.recolour)}"
        partial.rename(shifted)
    clock.phase("b", f"shifted copy {shifted}: labels {args.recolour}, {found}", started)

    started = time.perf_counter()
    champion = args.champion or work / "champion"
    if not args.champion:
        train(smoke, args.data_dir, champion)
    champion_top1 = evaluate(args.data_dir, champion).top1_accuracy
    clock.phase("a", f"champion {champion}: {champion_top1:.1f} % top-1 on the sample", started)

    started = time.perf_counter()
    step0 = evaluate(shifted, champion).top1_accuracy
    clock.phase("0", f"champion on the shifted data: {step0:.1f} % top-1", started)

    started = time.perf_counter()
    scratch = train(smoke, shifted, shift / "scratch")
    target = evaluate(shifted, shift / "scratch").top1_accuracy
    clock.phase("c", f"from scratch on the shifted data: S = {scratch.total_steps} steps, T = {target:.1f} %", started)

    started = time.perf_counter()
    finetune: TrainConfig = smoke.replace(
        base_lr=smoke.base_lr * args.finetune_lr_scale, warmup_epochs=1.0, epochs=args.finetune_epochs,
        checkpoint_every=args.eval_every, keep_checkpoints=KEEP_ALL,
    )
    # Named by its recipe: a rerun with another --finetune-* reuses the champion and the scratch run.
    tuned_dir = shift / f"finetune-lr{args.finetune_lr_scale:g}-e{args.finetune_epochs}-k{args.eval_every}"
    tuned = train(finetune, shifted, tuned_dir, init_from=InitFrom(str(champion)))
    clock.phase("d", f"fine-tune from the champion: {tuned.total_steps} steps at peak LR "
                f"{finetune.peak_lr(1):g} ({args.finetune_lr_scale:g} x smoke's)", started)

    started = time.perf_counter()
    checkpoints = kept_checkpoints(tuned_dir)
    reached: tuple[int, float] | None = (0, step0) if step0 >= target else None  # the shift did not hurt
    for checkpoint in [] if reached else checkpoints:
        result = evaluate(shifted, checkpoint_view(checkpoint, tuned_dir, tuned_dir / "views"))
        print(f"   fine-tune step {result.step:4d}: {result.top1_accuracy:5.1f} % top-1", flush=True)
        if result.top1_accuracy >= target:
            reached = (result.step, result.top1_accuracy)
            break
    final = evaluate(shifted, tuned_dir)
    clock.phase("d-eval", f"{len(checkpoints)} checkpoints kept, evaluated up to T and the last", started)

    print(f"\nrecoloured labels {args.recolour}; champion {champion_top1:.1f} % on the sample")
    print(f"{'champion on the shifted data (step 0)':46} {step0:6.1f} % top-1")
    print(f"{'S: from-scratch steps':46} {scratch.total_steps:6d}")
    print(f"{'T: from-scratch top-1 after S':46} {target:6.1f} %")
    if reached:
        print(f"{'fine-tune steps to reach T':46} {reached[0]:6d}   ({reached[1]:.1f} %)")
        print(f"{'fraction of S':46} {reached[0] / scratch.total_steps:6.3f}")
    else:
        print(f"{'fine-tune steps to reach T':46} not within {tuned.total_steps} "
              f"(fraction > {tuned.total_steps / scratch.total_steps:.3f})")
    print(f"{'fine-tune top-1 at its end':46} {final.top1_accuracy:6.1f} %   (step {final.step})")
    print("wall time: " + ", ".join(f"({key}) {s:.0f} s" for key, s in clock.seconds.items()))
    if not args.keep_finetune:  # its kept checkpoints, ~200 MB each with the momentum, fill a disk fast
        shutil.rmtree(tuned_dir)
        print(f"removed {tuned_dir} (--keep-finetune keeps it)")


if __name__ == "__main__":
    sys.exit(main())
