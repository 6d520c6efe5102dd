"""Run under horovodrun: a few real training steps; each rank writes a hash of its state and what it saw.

Each rank starts from different random weights, so identical weights afterwards prove the
broadcast; identical weights after the steps prove the gradient averaging; disjoint filenames prove
the per-rank data sharding.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from pipeline.data.input import train_dataset
from pipeline.model import build_resnet50
from pipeline.recipe import get_profile
from pipeline.train.dist import init_dist
from pipeline.train.loop import make_train_step
from pipeline.train.optim import make_optimizer, make_schedule

data_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
dist = init_dist()
keras.utils.set_random_seed(100 + dist.rank)  # deliberately different initial weights per rank
config = get_profile("smoke").replace(batch_size=8, xla=False)
model = build_resnet50(config.num_classes, image_size=config.image_size)
optimizer = make_optimizer(config, make_schedule(config, world_size=dist.size, total_steps=10, steps_per_epoch=10))
optimizer.build(model.trainable_variables)
initial = hashlib.sha256(model.get_layer("conv1").kernel.numpy().tobytes()).hexdigest()
dist.broadcast_from_chief([*model.variables, *optimizer.variables])
step = make_train_step(model, optimizer, config, dist)
data = train_dataset(data_dir, batch_size=8, image_size=32, rank=dist.rank, num_ranks=dist.size, seed=5,
                     with_filenames=True)
seen = []
losses = []
for images, labels, filenames in data.take(3):
    seen += [f.decode() for f in filenames.numpy()]
    loss, _ = step(images, labels, tf.constant(0.0))
    losses.append(float(loss))


def digest(variables) -> str:
    h = hashlib.sha256()
    for v in variables:
        h.update(v.path.encode() + v.numpy().tobytes())
    return h.hexdigest()


(out_dir / f"rank{dist.rank}.json").write_text(json.dumps({
    "size": dist.size, "initial_conv1": initial, "trained": digest([*model.trainable_variables, *optimizer.variables]),
    "bn_statistics": digest(model.non_trainable_variables), "seen": seen, "losses": losses,
    "iterations": int(optimizer.iterations),
}))
