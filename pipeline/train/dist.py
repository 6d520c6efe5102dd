"""One process or many: the few collective operations the trainer needs, with or without Horovod.

The trainer is the same code in both cases. Under `horovodrun` (HOROVOD_RANK is set) it uses Horovod
with Gloo or NCCL; otherwise a single-process stand-in whose collectives are the identity. Under
Keras 3, Horovod's DistributedOptimizer runs with model.fit but never averages (Keras no longer calls
the hooks it overrides), `hvd.allreduce` cannot run inside an XLA cluster, and Keras variables are not
`tf.Variable`s: so gradients are averaged with a grouped allreduce outside the XLA cluster and
variables are broadcast by value.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf

log = logging.getLogger(__name__)


def launched_by_horovod() -> bool:
    return "HOROVOD_RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ


@dataclass
class Dist:
    """Rank, size and collectives; `hvd` is None in a single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    hvd: object | None = None

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def average(self, tensors: Sequence[tf.Tensor]) -> list[tf.Tensor]:
        """Average across ranks in one grouped allreduce (one fused collective, not one per tensor)."""
        if self.hvd is None:
            return list(tensors)
        return self.hvd.grouped_allreduce(list(tensors), op=self.hvd.Average)

    def broadcast_from_chief(self, variables: Sequence) -> None:
        """Make every rank start from rank 0's values: weights, optimizer slots, counters."""
        if self.hvd is None:
            return
        for v in variables:
            # Keras variables expose `.value` as a property, tf.Variables as a method.
            value = v.value() if callable(v.value) else v.value
            v.assign(self.hvd.broadcast(value, root_rank=0))

    def any(self, flag: bool) -> bool:
        """True on every rank if any rank says True: how a SIGTERM on one rank stops all of them."""
        if self.hvd is None:
            return flag
        return bool(self.hvd.allreduce(tf.constant(float(flag)), op=self.hvd.Max).numpy() > 0)

    def sum(self, values: Sequence[float]) -> list[float]:
        if self.hvd is None:
            return list(values)
        return [float(x) for x in self.hvd.allreduce(tf.constant(list(values), tf.float64), op=self.hvd.Sum).numpy()]


def init_dist() -> Dist:
    """Initialise Horovod when launched by horovodrun; pin one GPU per local rank with memory growth."""
    hvd = None
    rank = size = local_rank = None
    if launched_by_horovod():
        try:
            import horovod.tensorflow as hvd
        except ImportError as exc:
            raise RuntimeError(f"launched by horovodrun, but Horovod cannot be imported: {exc}") from exc
        hvd.init()
        rank, size, local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus and hvd is not None:
        tf.config.set_visible_devices(gpus[local_rank % len(gpus)], "GPU")
    if hvd is None:
        return Dist()
    log.debug("horovod rank %d of %d (local rank %d)", rank, size, local_rank)
    return Dist(rank=rank, size=size, local_rank=local_rank, hvd=hvd)
