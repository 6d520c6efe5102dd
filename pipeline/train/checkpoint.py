"""Checkpoints that make a run resumable: model, optimizer (loss scale included), step and epoch.

Variables are saved under their Keras paths (`conv1/kernel`, `sgd/conv1_kernel_momentum`), not under
the object graph `tf.train.Checkpoint(model=...)` would use, which numbers layers by position: with
paths, a checkpoint survives a refactor that keeps the layer names.

`tf.train.CheckpointManager` writes the data files first and the `checkpoint` index last, so a
kill -9 during a save leaves the previous checkpoint as the latest one, never a torn one.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from pipeline.contracts.names import CHECKPOINT_DIR


def by_path(variables) -> dict:
    table = {v.path: v for v in variables}
    if len(table) != len(variables):
        raise ValueError("two variables share a path; checkpoints need unique variable paths")
    return table


class TrainState:
    def __init__(self, model, optimizer, model_dir: Path, *, keep: int = 3) -> None:
        self.optimizer = optimizer
        self._step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(
            model=by_path(model.variables), optimizer=by_path(optimizer.variables), step=self._step, epoch=self._epoch
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(Path(model_dir) / CHECKPOINT_DIR), max_to_keep=keep, checkpoint_name="ckpt"
        )

    @property
    def counters(self) -> list[tf.Variable]:
        return [self._step, self._epoch]

    @property
    def step(self) -> int:
        return int(self._step.numpy())

    @step.setter
    def step(self, value: int) -> None:
        self._step.assign(value)

    @property
    def epoch(self) -> int:
        return int(self._epoch.numpy())

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.assign(value)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def restore(self) -> str | None:
        """Load the latest checkpoint, if any; every saved object must find its variable."""
        path = self.manager.latest_checkpoint
        if path:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def save(self) -> str:
        return self.manager.save(checkpoint_number=self.step)

    def learning_rate(self) -> float:
        """The LR the optimizer applies at its current iteration (the schedule's value)."""
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        return float(inner.learning_rate)


def restore_model(model, model_dir: Path) -> str:
    """Load only the model's weights from the latest checkpoint of a model directory (for evaluation)."""
    directory = Path(model_dir) / CHECKPOINT_DIR
    path = tf.train.latest_checkpoint(str(directory))
    if path is None:
        raise FileNotFoundError(f"{directory}: no checkpoint to evaluate; train first")
    tf.train.Checkpoint(model=by_path(model.variables)).restore(path).expect_partial().assert_existing_objects_matched()
    return path
