"""Benchmark: CPU training img/s of our compiled step against keras.applications.ResNet50 + model.fit.

Prints, all measured in this one run on the same synthetic batch and image size (these machines are
noisy, so only ratios against a baseline from the same run mean anything):
  keras fit   keras.applications.ResNet50(weights=None, classifier_activation=None), compiled with
              SGD(momentum=0.875) and CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
              trained by `model.fit` on `tf.data.Dataset.from_tensors(batch).repeat()` (so no input
              pipeline is measured), with Keras' default jit_compile="auto". On a machine without a
              GPU, "auto" means *no* XLA (Keras' `_resolve_auto_jit_compile` disables it when every
              device is a CPU), so this is the plain `tf.function` path most users get.
  ours, XLA   `pipeline.train.benchmark.StepTimer`, i.e. `rn50 train --benchmark`'s step: our
              ResNet50 v1.5, the `smoke` profile's recipe (float32, SGD momentum 0.875 on the
              warmup-cosine schedule, label smoothing 0.1, L2 on conv/dense kernels added to the
              loss), forward + backward compiled by XLA, optimizer update outside it.
  ours, no XLA  the same with xla=False (TensorFlow's own kernels): what the smoke profile trains with.
  keras fit, jit_compile=True  the baseline with XLA forced on (the whole step, optimizer
              included), as a fairness check.
and the ratios ours-noXLA / keras-fit and ours-XLA / keras-fit.

The models are not identical: Keras' ResNet50 is v1 (the stride of each downsampling block sits in
its first 1x1 conv), ours is v1.5 (in the 3x3 conv), which gives v1.5's first 1x1 conv of three
blocks 4x the positions, so ours does about 5 % more multiply-adds per image (printed, counted from
the layers); Keras' convs also carry biases, ours do not (BN follows), and the baseline has no L2 term.

How it is timed: each model lives in its own spawned process (so no model's threads, memory or
compiled code affect another's), built, compiled and warmed up there (all at once, untimed); then
the parent asks them in turn, A B C D A B C D ..., for one timing window each: one untimed lead-in
step (for fit: the first batch of a fit() call, which absorbs fit's own set-up), then --steps timed
steps, waiting for the last to finish. Only one process computes at a time. The best window of
--repeat counts (the least disturbed by other jobs); the median is shown beside it.

What to expect on a CPU (figures in docs/benchmarks.md): XLA makes the step 2-3x *slower*, ours and
Keras' alike (that is why Keras' "auto" turns XLA off there, and why `rn50 train --xla` warns on a
CPU): XLA:CPU emits BatchNorm's 4-D reductions as plain loops, puts physical transposes in front of
the 1x1 convs' filter gradients, and runs convolutions on 2x2 maps 40x slower than their arithmetic
needs. Without XLA our step and `model.fit` run about level, per multiply-add.

    .venv/bin/python bench/train.py [--image-size 64] [--batch-size 32] [--steps 6] [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

if TYPE_CHECKING:
    import keras

Runner = Callable[[int], float]  # steps -> seconds for that many timed steps


@dataclass(frozen=True)
class Variant:
    """One line of the table: `key` picks what the worker builds."""

    key: str
    label: str


VARIANTS: tuple[Variant, ...] = (
    Variant("keras", "keras ResNet50 + fit, jit_compile=auto (no XLA on CPU)"),
    Variant("ours-xla", "ours (rn50 train --benchmark step), XLA"),
    Variant("ours-noxla", "ours, no XLA"),
    Variant("keras-xla", "keras ResNet50 + fit, jit_compile=True"),
)


def synthetic_batch(image_size: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The same float32 images and class ids in every process (seeded), as the input pipeline would hand over."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch_size, image_size, image_size, 3), dtype=np.float32)
    return images, rng.integers(0, 1000, size=batch_size).astype(np.int32)


def multiply_adds(model: keras.Model) -> float:
    """Forward multiply-adds per image of the conv and dense layers: the bulk of the work, for comparing models."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += h * w * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
    return float(total)


def prepare_ours(image_size: int, batch_size: int, xla: bool) -> tuple[Runner, float]:
    """`rn50 train --benchmark`'s step with the smoke recipe (already float32) at this size and 1000 classes."""
    import tensorflow as tf

    from pipeline.recipe import get_profile
    from pipeline.train.benchmark import StepTimer

    config = get_profile("smoke").replace(image_size=image_size, batch_size=batch_size, xla=xla, num_classes=1000)
    # total_steps is only the LR schedule's length: no effect on speed.
    timer = StepTimer(config, total_steps=10_000)
    images, labels = synthetic_batch(image_size, batch_size)
    timer.images, timer.labels = tf.constant(images), tf.constant(labels)  # the very batch the baseline gets

    def run(steps: int) -> float:
        timer.run(1)  # lead-in, like the first batch of each fit() below
        return timer.run(steps)

    return run, multiply_adds(timer.model)


def prepare_keras(image_size: int, batch_size: int, jit_compile: bool | str) -> tuple[Runner, float]:
    """The standard Keras path: applications.ResNet50, compile(), fit() on a dataset of one repeated batch."""
    import keras
    import tensorflow as tf

    model = keras.applications.ResNet50(
        weights=None, input_shape=(image_size, image_size, 3), classes=1000, classifier_activation=None
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.875),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        jit_compile=jit_compile,
    )
    images, labels = synthetic_batch(image_size, batch_size)
    data = tf.data.Dataset.from_tensors((images, tf.one_hot(labels, 1000))).repeat()

    class Clock(keras.callbacks.Callback):
        """Wall time at the end of each batch; Keras hands it Python floats, so each step has finished."""

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.ends.append(time.perf_counter())

    clock = Clock()

    def run(steps: int) -> float:
        model.fit(data, epochs=1, steps_per_epoch=steps + 1, verbose=0, shuffle=False, callbacks=[clock])
        return clock.ends[-1] - clock.ends[0]

    return run, multiply_adds(model)


def worker(key: str, image_size: int, batch_size: int, warmup: int, conn: Connection) -> None:
    """Build, compile and warm up one variant, then answer timing requests until told to stop (None)."""
    if key.startswith("ours"):
        run, macs = prepare_ours(image_size, batch_size, xla=key == "ours-xla")
    else:
        run, macs = prepare_keras(image_size, batch_size, jit_compile=True if key == "keras-xla" else "auto")
    started = time.perf_counter()
    run(max(1, warmup))  # the first call traces and compiles
    conn.send((time.perf_counter() - started, macs))
    while (steps := conn.recv()) is not None:
        conn.send(run(steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per window")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument("--repeat", type=int, default=3, help="windows per variant, interleaved; the best is kept")
    parser.add_argument("--no-keras-xla", action="store_true", help="skip the jit_compile=True baseline")
    args = parser.parse_args()

    variants = [v for v in VARIANTS if not (args.no_keras_xla and v.key == "keras-xla")]
    ctx = multiprocessing.get_context("spawn")
    pipes: dict[str, Connection] = {}
    procs = []
    for v in variants:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(v.key, args.image_size, args.batch_size, args.warmup, child))
        proc.start()
        pipes[v.key] = parent
        procs.append(proc)
    print(f"{args.image_size}x{args.image_size} px, batch {args.batch_size}, float32, {os.cpu_count()} CPUs; "
          f"best of {args.repeat} windows of {args.steps} steps, interleaved")
    ready = {key: pipe.recv() for key, pipe in pipes.items()}  # all compile at once: not timed
    seconds: dict[str, list[float]] = {key: [] for key in pipes}
    for _ in range(args.repeat):
        for key, pipe in pipes.items():
            pipe.send(args.steps)
            seconds[key].append(pipe.recv())
    for pipe in pipes.values():
        pipe.send(None)
    for proc in procs:
        proc.join()

    rate = {key: args.batch_size * args.steps / min(s) for key, s in seconds.items()}
    median = {key: args.batch_size * args.steps / statistics.median(s) for key, s in seconds.items()}
    print(f"{'':58} {'img/s':>7} {'median':>7} {'GMAC/img':>9} {'compile+warmup':>15}")
    for v in variants:
        compile_s, macs = ready[v.key]
        print(f"{v.label:58} {rate[v.key]:7.2f} {median[v.key]:7.2f} {macs / 1e9:9.3f} {compile_s:13.1f} s")
    base = rate["keras"]
    print(f"ours-noXLA / keras-fit = {rate['ours-noxla'] / base:.2f}")
    print(f"ours-XLA / keras-fit   = {rate['ours-xla'] / base:.2f}")
    if "keras-xla" in rate:
        print(f"ours-XLA / keras-fit with jit_compile=True = {rate['ours-xla'] / rate['keras-xla']:.2f}")
    work = ready["ours-noxla"][1] / ready["keras"][1]
    print(f"ours does {work:.3f}x the multiply-adds per image; per multiply-add, ours-noXLA / keras-fit = "
          f"{rate['ours-noxla'] * work / base:.2f}")


if __name__ == "__main__":
    main()
