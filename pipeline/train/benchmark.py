"""`rn50 train --benchmark`: the training step's img/s on synthetic data, like NVIDIA's training_benchmark.

The same model, optimizer, AMP/XLA settings and compiled step as a real run, fed one random batch
that stays on the device, so the figure is the step's speed, not the input pipeline's or the disk's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import tensorflow as tf

from pipeline.recipe import TrainConfig
from pipeline.train.dist import Dist, init_dist
from pipeline.train.loop import make_train_step
from pipeline.train.model import build_model
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


class StepTimer:
    """The compiled step and its synthetic batch, built once, so that it can be timed again and again.

    `run_benchmark` times it once; bench/train.py times it in several windows interleaved with other
    models, and keeps the best, which needs the model and the compiled step to outlive one window.
    """

    def __init__(self, config: TrainConfig, *, total_steps: int, dist: Dist | None = None) -> None:
        self.config = config
        self.dist = dist = dist or init_dist()
        model = build_model(config, dtype=config.dtype_policy)
        schedule = make_schedule(config, world_size=dist.size, total_steps=total_steps, steps_per_epoch=total_steps)
        optimizer = make_optimizer(config, schedule)
        optimizer.build(model.trainable_variables)
        dist.broadcast_from_chief([*model.variables, *optimizer.variables])
        self.model = model
        self.step = make_train_step(model, optimizer, config, dist)
        gen = tf.random.Generator.from_seed(dist.rank)
        dtype = config.amp_dtype if config.amp else "float32"
        self.images = tf.cast(gen.normal([config.batch_size, config.image_size, config.image_size, 3]), dtype)
        self.labels = gen.uniform([config.batch_size], 0, config.num_classes, dtype=tf.int32)
        self._no_stop = tf.constant(0.0)

    def run(self, steps: int) -> float:
        """Seconds for `steps` steps, waiting for the last one to finish (the first call also compiles)."""
        started = time.perf_counter()
        loss = tf.constant(0.0)
        for _ in range(steps):
            loss, _ = self.step(self.images, self.labels, self._no_stop)
        float(loss)  # the steps run asynchronously on a GPU: wait for the last one
        return time.perf_counter() - started


def run_benchmark(
    config: TrainConfig, *, steps: int = 50, warmup: int = 5, dist: Dist | None = None
) -> BenchmarkResult:
    timer = StepTimer(config, total_steps=warmup + steps, dist=dist)
    compile_seconds = timer.run(1)
    timer.run(warmup - 1)
    seconds = timer.run(steps)
    per_replica = config.batch_size * steps / seconds
    return BenchmarkResult(
        train_throughput=round(per_replica * timer.dist.size, 2), per_replica=round(per_replica, 2), steps=steps,
        batch_size=config.batch_size, image_size=config.image_size, ranks=timer.dist.size, amp=config.amp,
        xla=config.xla, compile_seconds=round(compile_seconds, 1),
    )
