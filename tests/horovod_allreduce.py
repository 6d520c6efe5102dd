"""Run under horovodrun: each rank allreduces a rank-dependent tensor and writes what it got."""

import json
import sys
from pathlib import Path

import horovod.tensorflow as hvd
import tensorflow as tf

hvd.init()
rank = hvd.rank()
value = tf.constant([float(rank + 1), 10.0 * (rank + 1)])
average = hvd.allreduce(value, op=hvd.Average)
total = hvd.allreduce(value, op=hvd.Sum)
out = Path(sys.argv[1]) / f"rank{rank}.json"
out.write_text(json.dumps({"size": hvd.size(), "average": average.numpy().tolist(), "sum": total.numpy().tolist()}))
