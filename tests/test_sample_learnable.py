"""The sample dataset is learnable: ResNet50 from scratch at 32x32 on 2 CPU cores, in minutes.

The smoke profile of the training issue depends on this, so it is checked here with an honest
setup: random resized crops (scale 0.08-1, boxes respected) and flips on, the NGC optimiser
(SGD momentum 0.875, LR 0.256 x batch/256 with linear warmup and cosine decay, label smoothing 0.1), and
evaluation on the held-out validation split with the resize-and-centre-crop NVIDIA uses. The model
is Keras' ResNet50 (v1) with BatchNorm momentum 0.9, a stand-in until the v1.5 builder exists.
"""

from __future__ import annotations

import math

import pytest

from pipeline.data.format import BBOX_XMAX, BBOX_XMIN, BBOX_YMAX, BBOX_YMIN, ENCODED, LABEL, parse_example
from pipeline.data.labels import LabelMap
from pipeline.data.sample import SampleSpec

SIZE = 32
BATCH = 32
STEPS = 300
MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def _pipeline(files, train: bool, class_of_label):
    import tensorflow as tf

    def train_map(example):
        p = parse_example(example)
        boxes = tf.stack([p[BBOX_YMIN], p[BBOX_XMIN], p[BBOX_YMAX], p[BBOX_XMAX]], axis=-1)
        boxes = tf.cond(tf.size(boxes) > 0, lambda: boxes, lambda: tf.constant([[0.0, 0.0, 1.0, 1.0]]))
        shape = tf.io.extract_jpeg_shape(p[ENCODED])
        begin, crop, _ = tf.image.sample_distorted_bounding_box(
            shape, boxes[None], min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True,
        )
        window = tf.stack([begin[0], begin[1], crop[0], crop[1]])
        image = tf.io.decode_and_crop_jpeg(p[ENCODED], window, channels=3)
        image = tf.image.random_flip_left_right(tf.image.resize(image, (SIZE, SIZE)))
        return (image - MEAN) / STD, class_of_label(p[LABEL])

    def eval_map(example):
        p = parse_example(example)
        image = tf.cast(tf.io.decode_jpeg(p[ENCODED], channels=3), tf.float32)
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        short = SIZE * 256 / 224
        scale = short / tf.reduce_min(hw)
        image = tf.image.resize(image, tf.cast(tf.round(hw * scale), tf.int32))
        image = tf.image.resize_with_crop_or_pad(image, SIZE, SIZE)
        return (image - MEAN) / STD, class_of_label(p[LABEL])

    ds = tf.data.TFRecordDataset([str(f) for f in files])
    if train:
        ds = ds.cache().shuffle(2048, seed=1).repeat().map(train_map, num_parallel_calls=2)
    else:
        ds = ds.map(eval_map, num_parallel_calls=2)
    return ds.batch(BATCH).prefetch(2)


@pytest.mark.slow
def test_resnet50_learns_the_sample_well_above_chance(sample_dir):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(7)
    labels = SampleSpec().labels
    # Record label (1..1000) -> class index (label - 1) -> position among the sample's 10 classes.
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant([LabelMap.class_index(x) for x in labels], tf.int64), tf.range(len(labels), dtype=tf.int64)
        ),
        default_value=-1,
    )
    class_of_label = lambda label: table.lookup(label - 1)
    train = _pipeline(sorted(sample_dir.glob("train-*")), True, class_of_label)
    val = _pipeline(sorted(sample_dir.glob("validation-*")), False, class_of_label)

    model = keras.applications.ResNet50(
        weights=None, input_shape=(SIZE, SIZE, 3), classes=len(labels), classifier_activation=None
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    peak, warmup = 0.256 * BATCH / 256, 30

    class Schedule(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warm = tf.minimum(1.0, (step + 1) / warmup)
            return peak * warm * 0.5 * (1 + tf.cos(math.pi * tf.minimum(step, STEPS) / STEPS))

    model.compile(
        optimizer=keras.optimizers.SGD(Schedule(), momentum=0.875),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        metrics=["accuracy"],
        jit_compile=True,
    )
    onehot = lambda x, y: (x, tf.one_hot(y, len(labels)))
    model.fit(train.map(onehot), steps_per_epoch=STEPS // 3, epochs=3, verbose=2)
    _, top1 = model.evaluate(val.map(onehot), verbose=0)
    assert model.optimizer.iterations.numpy() == STEPS
    print(f"sample top-1 after {STEPS} steps: {top1:.3f} ({top1 / 0.1:.1f}x chance)")
    assert top1 >= 0.60
