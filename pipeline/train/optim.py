"""The optimiser, the loss and the weight decay of NVIDIA's recipe.

Weight decay is an L2 term in the loss over conv and dense kernels, as in NVIDIA's runner, not
Keras' decoupled `weight_decay` (which multiplies by the LR and would change the recipe). BatchNorm
gamma/beta and biases are never decayed: decaying them hurts accuracy and NVIDIA excludes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from pipeline.recipe import TrainConfig
from pipeline.train.schedule import WarmupCosine

# Static loss scaling: start at the configured scale and (practically) never grow it.
_NEVER_GROW = 2**31 - 1


def decay_variables(model: keras.Model) -> list[keras.Variable]:
    """Conv and dense kernels: the only variables weight decay applies to."""
    return [v for v in model.trainable_variables if v.path.rsplit("/", 1)[-1] == "kernel"]


def l2_penalty(variables: Sequence[keras.Variable], weight_decay: float) -> tf.Tensor:
    """weight_decay x sum(w^2) / 2 in float32, whatever the compute dtype."""
    if not variables or weight_decay == 0:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v.value, tf.float32)) for v in variables])


def make_schedule(config: TrainConfig, *, world_size: int, total_steps: int, steps_per_epoch: int) -> WarmupCosine:
    warmup = min(total_steps, round(config.warmup_epochs * steps_per_epoch))
    return WarmupCosine(config.peak_lr(world_size), warmup, total_steps)


def make_optimizer(config: TrainConfig, schedule: WarmupCosine) -> keras.optimizers.Optimizer:
    """SGD with momentum on the schedule; wrapped for loss scaling under float16 AMP."""
    # Fixed names: Keras would otherwise number them (sgd_1, ...) by how many optimizers this process made
    # before, and the names are part of the checkpoint's keys, so a resume in such a process would fail.
    sgd = keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum, name="sgd")
    if not (config.amp and config.amp_dtype == "float16"):
        return sgd  # bfloat16 has float32's range: no loss scaling needed
    if config.static_loss_scale is None:
        return keras.optimizers.LossScaleOptimizer(sgd, name="loss_scale_optimizer")
    return keras.optimizers.LossScaleOptimizer(
        sgd, initial_scale=config.static_loss_scale, dynamic_growth_steps=_NEVER_GROW, name="loss_scale_optimizer"
    )


def classification_loss(labels: tf.Tensor, logits: tf.Tensor, *, num_classes: int, smoothing: float) -> tf.Tensor:
    """Mean softmax cross-entropy with label smoothing; labels are class ids or (mixup) soft targets."""
    targets = labels if labels.shape.rank == 2 else tf.one_hot(labels, num_classes)
    targets = tf.cast(targets, tf.float32)
    if smoothing:
        targets = targets * (1.0 - smoothing) + smoothing / num_classes
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(targets, tf.cast(logits, tf.float32)))


def mixup(images: tf.Tensor, labels: tf.Tensor, *, alpha: float, num_classes: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Blend each example with the batch reversed, one Beta(alpha, alpha) weight per batch (NVIDIA's form)."""
    a = tf.random.gamma([], alpha)
    b = tf.random.gamma([], alpha)
    lam = a / (a + b)
    onehot = tf.one_hot(labels, num_classes)
    mixed = lam * tf.cast(images, tf.float32) + (1 - lam) * tf.cast(tf.reverse(images, [0]), tf.float32)
    return tf.cast(mixed, images.dtype), lam * onehot + (1 - lam) * tf.reverse(onehot, [0])
