"""The training loop: one screen of code, the same for one process and for N Horovod ranks.

XLA compiles the forward and backward pass only; the gradient allreduce runs outside the XLA
cluster (Horovod's ops cannot run inside one) and the optimizer applies the averaged gradients.
The SIGTERM flag travels in the same grouped allreduce as the gradients, so every rank learns
about a stop request in the step it happens, at no extra collective.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tensorflow as tf

from pipeline.contracts.config import TRAINER
from pipeline.contracts.names import CONFIG_FILE
from pipeline.data.input import count_records, read_batches, train_dataset
from pipeline.files import write_json
from pipeline.provenance import trainer_record
from pipeline.recipe import TrainConfig
from pipeline.train.checkpoint import TrainState
from pipeline.train.dist import Dist, init_dist
from pipeline.train.logs import MetricsLog
from pipeline.train.model import build_model, warn_if_xla_on_cpu
from pipeline.train.optim import (
    classification_loss,
    decay_variables,
    l2_penalty,
    make_optimizer,
    make_schedule,
    mixup,
)
from pipeline.train.signals import StopRequest
from pipeline.train.warm_start import WeightSource, load_weights

Status = Literal["finished", "already_finished", "stopped"]
# Settings that may change between a run and its resumption without changing what is trained.
RESUMABLE_CHANGES = frozenset({"checkpoint_every", "keep_checkpoints", "log_every", "shuffle_buffer", "cache_data"})


@dataclass(frozen=True)
class TrainResult:
    status: Status
    step: int
    total_steps: int
    checkpoint: str | None
    exit_code: int = 0


def plan_steps(config: TrainConfig, train_records: int, world_size: int) -> tuple[int, int]:
    """(steps per epoch, total steps): NVIDIA counts an epoch as the records over the global batch."""
    steps_per_epoch = max(1, train_records // (config.batch_size * world_size))
    return steps_per_epoch, config.steps or config.epochs * steps_per_epoch


def check_resumable(config: TrainConfig, model_dir: Path) -> None:
    """Refuse to continue a model directory with a different recipe: its checkpoints would lie."""
    path = model_dir / CONFIG_FILE
    if not path.exists():
        return
    saved = TrainConfig.load(model_dir).to_dict()
    changed = sorted(k for k, v in config.to_dict().items() if saved.get(k) != v and k not in RESUMABLE_CHANGES)
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {config.to_dict()[k]!r}" for k in changed)
        raise ValueError(f"{path}: this model directory was trained with a different config ({diffs}); "
                         "use a new --model-dir or the same settings")


def save_config(config: TrainConfig, model_dir: Path, *, init: dict | None = None) -> None:
    """config.json: the recipe, under `init` where the first weights came from (kept when a run resumes), and
    under TRAINER the code that trains (its code version and image): what the version's manifest says trained
    it, and what check_changes compares the next run's trainer with. A resumed run records its own: the code
    that finished the training."""
    path = model_dir / CONFIG_FILE
    if init is None and path.exists():
        init = json.loads(path.read_text()).get("init")
    write_json(path, config.to_dict() | ({"init": init} if init else {}) | {TRAINER: trainer_record()})


def train(config: TrainConfig, data_dir: Path, model_dir: Path, *, dist: Dist | None = None,
          init_from: WeightSource | None = None) -> TrainResult:
    """Train into model_dir, resuming its latest checkpoint; a run without one starts from init_from's weights."""
    dist = dist or init_dist()
    data_dir, model_dir = Path(data_dir), Path(model_dir)
    if dist.is_chief:
        model_dir.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(model_dir, enabled=dist.is_chief)
    if dist.is_chief:
        check_resumable(config, model_dir)
        save_config(config, model_dir)
        log.say(f"config: {json.dumps(config.to_dict(), sort_keys=True)}")
        log.say(f"data: {data_dir}  model: {model_dir}  ranks: {dist.size}")

    steps_per_epoch, total_steps = plan_steps(config, count_records(data_dir, "train"), dist.size)
    model = build_model(config, dtype=config.dtype_policy)
    if dist.is_chief:
        warn_if_xla_on_cpu(config)
    schedule = make_schedule(config, world_size=dist.size, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    optimizer = make_optimizer(config, schedule)
    # Before tracing: otherwise Keras 3's LossScaleOptimizer freezes scale_loss at its initial scale (32768)
    # inside a separately traced function, every float16 step overflows and nothing trains.
    optimizer.build(model.trainable_variables)
    state = TrainState(model, optimizer, model_dir, keep=config.keep_checkpoints)
    if dist.is_chief and (restored := state.restore()):
        log.say(f"resumed from {restored} at step {state.step}")  # its own checkpoint wins over init_from
    elif dist.is_chief:
        record: dict = {}
        if init_from is not None and not init_from.scratch:
            with init_from.model_dir() as (source, record):
                record["checkpoint"] = Path(load_weights(model, source)).name
            log.say(f"weights from {json.dumps(record, sort_keys=True)}; the optimizer and the step start fresh")
        save_config(config, model_dir, init=record)  # {}: from scratch, whatever an attempt before recorded
    dist.broadcast_from_chief([*model.variables, *optimizer.variables, *state.counters])
    step = state.step
    if step >= total_steps:
        log.say(f"training already finished: step {step} of {total_steps}; nothing to do")
        return TrainResult("already_finished", step, total_steps, state.latest)

    images_dtype = config.amp_dtype if config.amp else "float32"
    data = train_dataset(
        data_dir, batch_size=config.batch_size, image_size=config.image_size, rank=dist.rank, num_ranks=dist.size,
        seed=None if config.seed is None else config.seed + step, cache=config.cache_data,
        shuffle_buffer=config.shuffle_buffer, dtype=images_dtype,
    )
    # A record that cannot be read ends the run naming its shard and record, not deep in tf.data.
    batches = read_batches(data, data_dir, "train", rank=dist.rank, num_ranks=dist.size)
    train_step = make_train_step(model, optimizer, config, dist)
    result = _run(config, batches, train_step, state, log, dist, step, total_steps, steps_per_epoch)
    log.close()
    return result


def make_train_step(model, optimizer, config: TrainConfig, dist: Dist):
    """The compiled step: (images, labels, stop flag) -> (mean loss over ranks, stop on any rank)."""
    scaling = hasattr(optimizer, "scale_loss") and hasattr(optimizer, "inner_optimizer")
    decayed = decay_variables(model)

    @tf.function(jit_compile=config.xla)
    def compute_grads(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = classification_loss(labels, logits, num_classes=config.num_classes, smoothing=config.label_smoothing)
            total = loss + l2_penalty(decayed, config.weight_decay)
            scaled = optimizer.scale_loss(total) if scaling else total
        return loss, tape.gradient(scaled, model.trainable_variables)

    @tf.function
    def train_step(images, labels, stop):
        if config.mixup_alpha > 0:
            images, labels = mixup(images, labels, alpha=config.mixup_alpha, num_classes=config.num_classes)
        loss, grads = compute_grads(images, labels)
        *grads, loss, stop = dist.average([*grads, loss, stop])
        optimizer.apply(grads, model.trainable_variables)
        return loss, stop

    train_step.compute_grads = compute_grads  # for inspection: tests read its XLA HLO
    return train_step


def _run(config, data, train_step, state: TrainState, log: MetricsLog, dist: Dist, step: int, total_steps: int,
         steps_per_epoch: int) -> TrainResult:
    global_batch = config.batch_size * dist.size
    epochs = math.ceil(total_steps / steps_per_epoch)
    window_start, window_images, timed_steps = time.perf_counter(), 0, 0
    started = time.perf_counter()
    batches = iter(data)
    with StopRequest() as stop:
        while step < total_steps:
            images, labels = next(batches)
            loss, stopping = train_step(images, labels, tf.constant(1.0 if stop.requested else 0.0))
            step += 1
            state.step = step
            state.epoch = (step - 1) // steps_per_epoch + 1
            stopping = float(stopping) > 0
            if step == 1 or timed_steps == 0:  # the first step compiles: keep it out of the throughput
                window_start, window_images, timed_steps = time.perf_counter(), 0, 1
            else:
                window_images += global_batch
            if step % config.log_every == 0 or step == total_steps or stopping:
                elapsed = max(1e-9, time.perf_counter() - window_start)
                throughput = window_images / elapsed
                lr_now = float(state.learning_rate())
                entry = {"step": step, "epoch": state.epoch, "loss": round(float(loss), 5), "lr": lr_now,
                         "train_throughput": round(throughput, 2)}
                log.record(entry)
                eta = (total_steps - step) * global_batch / throughput if throughput > 0 else 0.0
                log.progress(step=step, total=total_steps, epoch=state.epoch, epochs=epochs, loss=float(loss),
                             lr=lr_now, throughput=throughput, eta_seconds=eta)
                window_start, window_images = time.perf_counter(), 0
            if dist.is_chief and (step % config.checkpoint_every == 0 or step % steps_per_epoch == 0
                                  or step == total_steps or stopping):
                state.save()
            if stopping:
                log.say(f"stop requested (signal {stop.signum or 'on another rank'}): "
                        f"checkpoint at step {step} saved; exiting")
                return TrainResult("stopped", step, total_steps, state.latest, stop.exit_code)
    log.say(f"training finished: {total_steps} steps in {time.perf_counter() - started:.0f} s; "
            f"checkpoint {state.latest}")
    return TrainResult("finished", step, total_steps, state.latest)
