"""`rn50 train --benchmark`: the training step's img/s on synthetic data, like NVIDIA's training_benchmark.

The same model, optimizer, AMP/XLA settings and compiled step as a real run, fed one random batch
that stays on the device, so the figure is the step's speed, not the input pipeline's or the disk's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import tensorflow as tf

from pipeline.model import build_resnet50
from pipeline.train.config import TrainConfig
from pipeline.train.dist import Dist, init_dist
from pipeline.train.loop import make_train_step
from pipeline.train.optim import make_optimizer, make_schedule


@dataclass(frozen=True)
class BenchmarkResult:
    train_throughput: float  # img/s over all ranks
    per_replica: float
    steps: int
    batch_size: int
    image_size: int
    ranks: int
    amp: bool
    xla: bool
    compile_seconds: float


def run_benchmark(
    config: TrainConfig, *, steps: int = 50, warmup: int = 5, dist: Dist | None = None
) -> BenchmarkResult:
    dist = dist or init_dist()
    model = build_resnet50(
        config.num_classes, image_size=config.image_size, weight_init=config.weight_init, dtype=config.dtype_policy
    )
    total = warmup + steps
    schedule = make_schedule(config, world_size=dist.size, total_steps=total, steps_per_epoch=total)
    optimizer = make_optimizer(config, schedule)
    optimizer.build(model.trainable_variables)
    dist.broadcast_from_chief([*model.variables, *optimizer.variables])
    step = make_train_step(model, optimizer, config, dist)
    gen = tf.random.Generator.from_seed(dist.rank)
    dtype = config.amp_dtype if config.amp else "float32"
    images = tf.cast(gen.normal([config.batch_size, config.image_size, config.image_size, 3]), dtype)
    labels = gen.uniform([config.batch_size], 0, config.num_classes, dtype=tf.int32)
    no_stop = tf.constant(0.0)

    started = time.perf_counter()
    float(step(images, labels, no_stop)[0])  # compile
    compile_seconds = time.perf_counter() - started
    for _ in range(warmup - 1):
        step(images, labels, no_stop)
    float(step(images, labels, no_stop)[0])
    started = time.perf_counter()
    for _ in range(steps):
        loss, _ = step(images, labels, no_stop)
    float(loss)  # wait for the last step
    seconds = time.perf_counter() - started
    per_replica = config.batch_size * steps / seconds
    return BenchmarkResult(
        train_throughput=round(per_replica * dist.size, 2), per_replica=round(per_replica, 2), steps=steps,
        batch_size=config.batch_size, image_size=config.image_size, ranks=dist.size, amp=config.amp,
        xla=config.xla, compile_seconds=round(compile_seconds, 1),
    )
