"""rn50-pipeline: keep a ResNet50 v1.5 ImageNet classifier fresh, at NGC quality, every month.

The library never imports Airflow; `tasks/` and `dags/` adapt it to Airflow.
"""

import os

__version__ = "0.1.0"

# TensorFlow turns its oneDNN CPU kernels on by itself only on CPUs with AVX-512 VNNI, BF16 or AMX. Elsewhere
# (AMD EPYC, older Intel) it falls back to Eigen's, and the smoke recipe trained 4x slower on a 2-core EPYC
# (10.5 against 42.4 img/s, `rn50 train --benchmark`). Every module that imports TensorFlow is in this
# package, so this runs first; TF_ENABLE_ONEDNN_OPTS=0 still turns it off. GPUs are unaffected.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
