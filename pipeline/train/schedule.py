"""NVIDIA's learning-rate schedule: linear warmup to the peak, then cosine decay to zero."""

from __future__ import annotations

import math

import keras
import tensorflow as tf


def warmup_cosine(step: float, *, peak: float, warmup_steps: int, total_steps: int) -> float:
    """The schedule in plain Python: the reference the tests and the progress line use."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


@keras.saving.register_keras_serializable(package="rn50")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """`warmup_cosine` as a graph op, driven by the optimizer's step counter.

    The warmup starts at peak/warmup_steps rather than 0, so the first step already learns.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int) -> None:
        if total_steps < 1 or warmup_steps < 0 or peak < 0:
            raise ValueError(f"bad schedule: peak {peak}, warmup {warmup_steps}, total {total_steps}")
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = self.peak * (step + 1.0) / max(1, self.warmup_steps)
        span = float(max(1, self.total_steps - self.warmup_steps))
        progress = tf.minimum(1.0, (step - self.warmup_steps) / span)
        cosine = 0.5 * self.peak * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}
