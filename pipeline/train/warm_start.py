"""Warm start (`rn50 train --init-from`): a new run's first weights from a model directory it is given, not
from random (pipeline.stages.init_source finds that directory for `ngc`, `champion` or a PATH).

Weights only: the optimizer's state, the step and the epoch start fresh, so the new run follows its own
schedule. The weights are restored by variable path, as the run's own checkpoints are
(pipeline.train.checkpoint.by_path), so any source whose variables carry our paths and shapes fits,
whatever image size it was trained at (ResNet50's convolutions do not depend on it). A run that has a
checkpoint of its own resumes from it and never re-initialises: a retried run continues, not restarts.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from pipeline.contracts.names import CHECKPOINT_DIR


class WarmStartError(ValueError):
    """The init source cannot be used; the message is one line naming the source or the variable."""


class WeightSource(Protocol):
    """Where a new run's first weights come from (pipeline.stages.init_source.InitFrom resolves the names)."""

    @property
    def scratch(self) -> bool: ...

    def model_dir(self) -> AbstractContextManager[tuple[Path, dict[str, Any]]]:
        """(a model directory holding the weights, the record config.json keeps of them)."""
        ...


def _key(path: str) -> str:
    """The checkpoint key of a model variable saved under its path (tf.train.Checkpoint escapes . and /)."""
    return "model/" + path.replace(".", "..").replace("/", ".S") + "/.ATTRIBUTES/VARIABLE_VALUE"


def load_weights(model, source_dir: Path) -> str:
    """Assign every model variable from source_dir's latest checkpoint; refuse a missing or misshapen one.

    Returns the checkpoint read. Shapes are checked for all variables before any is assigned.
    """
    import tensorflow as tf

    directory = Path(source_dir) / CHECKPOINT_DIR
    latest = tf.train.latest_checkpoint(str(directory))
    if latest is None:
        raise WarmStartError(f"{directory}: no checkpoint to start from")
    reader = tf.train.load_checkpoint(latest)
    shapes = reader.get_variable_to_shape_map()
    for variable in model.variables:
        key = _key(variable.path)
        if key not in shapes:
            raise WarmStartError(f"{variable.path}: missing from {latest}; not a ResNet50 of this pipeline")
        if list(shapes[key]) != list(variable.shape):
            raise WarmStartError(f"{variable.path}: shape {list(shapes[key])} in {latest}, this run's model has "
                                 f"{list(variable.shape)} (a different num_classes?)")
    for variable in model.variables:
        variable.assign(reader.get_tensor(_key(variable.path)))
    return latest
