"""The serving export: a `.keras` file that predicts like the checkpoint, written once."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from support import untrained_checkpoint  # noqa: E402

from pipeline.recipe import get_profile  # noqa: E402
from pipeline.train.export import export_keras  # noqa: E402


def test_export_predicts_like_the_checkpoint_and_is_stable(tmp_path):
    import keras

    config = get_profile("smoke").replace(num_classes=10)
    config.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint to export"):
        export_keras(tmp_path)
    model = untrained_checkpoint(tmp_path, config, step=7)

    path = export_keras(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    images = tf.random.stateless_normal([2, 32, 32, 3], seed=[3, 4])
    served = keras.saving.load_model(path)
    np.testing.assert_allclose(served(images, training=False), model(images, training=False), rtol=1e-5, atol=1e-5)
    # Again: the same file, byte for byte (a retried publish must see the same sha256).
    assert hashlib.sha256(export_keras(tmp_path).read_bytes()).hexdigest() == digest
    assert not list(tmp_path.glob(".*partial*"))
