"""Run under horovodrun: an allreduce across the ranks, then what this rank was started with.

Writes OUT_DIR/rank<r>.json: the allreduce's result, this process's environment, and the command
lines of it and its ancestors (the `env K=V ... python` line horovodrun built, the shell sshd ran).
"""

import json
import os
import sys
from pathlib import Path

import horovod.tensorflow as hvd
import psutil
import tensorflow as tf

hvd.init()
rank = hvd.rank()
total = hvd.allreduce(tf.constant([float(rank + 1)]), op=hvd.Sum)
me = psutil.Process()
lineage = [{"name": p.name(), "cmdline": p.cmdline()} for p in [me, *me.parents()]]
out = Path(sys.argv[1]) / f"rank{rank}.json"
out.write_text(json.dumps({"size": hvd.size(), "sum": total.numpy().tolist(), "environ": dict(os.environ),
                           "lineage": lineage}))
