"""NVIDIA's image preprocessing, defined once: the JPEG decode flags, the evaluation resize and centre
crop, and the normalisation. Evaluation, prediction and training all take it from here, so a model is
scored and served on exactly the pixels it was trained on, and an imported NGC checkpoint sees exactly
what NVIDIA's own evaluation shows it.

Reference: NVIDIA DeepLearningExamples, TensorFlow/Classification/ConvNets, utils/image_processing.py
(`_decode_jpeg`, `_aspect_preserving_resize`, `_central_crop`) and `normalized_inputs`:

- decode: `decode_jpeg(channels=3, fancy_upscaling=False, dct_method='INTEGER_FAST')`. The flags
  change the pixels (chroma upsampling, the IDCT), and with them the predictions, measurably;
- resize: the shorter side to 256 for a 224 crop (`resize_side`: 256/224 of the crop for other sizes,
  e.g. 37 for the smoke profile's 32), each side's new length `int(side * (256 / shorter))` computed in
  float32 and truncated, bilinear. NVIDIA's checkpoint was made with TensorFlow 1, whose
  `tf.image.resize` is the legacy kernel (`align_corners=False`, no half-pixel centres);
  `tf.compat.v1.image.resize` is that same kernel, where TF2's `tf.image.resize` would shift the
  image by up to half a source pixel. Beyond an aspect ratio of 4:1, only the crop's pixels are
  computed, from the source pixels and weights that kernel gives them: the same values, at a cost that
  does not grow with the image's shape;
- crop: size x size at ((H - size) // 2, (W - size) // 2);
- normalise: (x - [123.68, 116.28, 103.53]) / [58.395, 57.120, 57.385] on the 0..255 scale, RGB, NHWC.

PNG files (`rn50 predict`) decode with `decode_png`; the decode flags are JPEG's.
TensorFlow is imported inside the functions, so that importing the constants costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow as tf

# NVIDIA's channel statistics on the 0..255 scale (utils/image_processing.py: _CHANNEL_MEANS, _CHANNEL_STDS).
MEAN_RGB: tuple[float, float, float] = (123.68, 116.28, 103.53)
STD_RGB: tuple[float, float, float] = (58.395, 57.120, 57.385)
# NVIDIA's decode: no fancy chroma upsampling, the fast integer IDCT (faster as well as NVIDIA's pixels).
JPEG_DECODE: dict[str, object] = {"fancy_upscaling": False, "dct_method": "INTEGER_FAST"}
# Evaluation resizes the shorter side to 256 for a 224 crop, and in proportion for other sizes.
EVAL_RESIZE_RATIO = 256 / 224
# Up to this many times resize_side squared pixels (aspect ratios up to 4:1), the evaluation resizes the
# whole image, by TensorFlow's own kernel, which is twice as fast as computing the crop alone; beyond
# it, only the crop is computed (the same values), so that the cost stays bounded.
WHOLE_RESIZE_AREA = 4

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def resize_side(image_size: int) -> int:
    """The shorter side's length before the centre crop: 256 for 224, 37 for 32."""
    return round(image_size * EVAL_RESIZE_RATIO)


def image_format(data: bytes) -> str | None:
    """'jpeg' or 'png' by the file's magic bytes; None for anything else."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    return None


def decode_jpeg(encoded: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 3]; channels=3 because ImageNet has grayscale (and CMYK) JPEGs."""
    import tensorflow as tf

    return tf.io.decode_jpeg(encoded, channels=3, **JPEG_DECODE)


def decode_and_crop_jpeg(encoded: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """The training crop's fused decode (only the window's blocks are decoded), with the same flags."""
    import tensorflow as tf

    return tf.io.decode_and_crop_jpeg(encoded, window, channels=3, **JPEG_DECODE)


def decode_png(encoded: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    return tf.io.decode_png(encoded, channels=3)


def eval_crop(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """float32 [size, size, 3] (0..255) from a decoded uint8 [H, W, 3]: NVIDIA's aspect-preserving resize
    of the shorter side to `resize_side(image_size)`, then the centre crop.

    Its cost is bounded whatever the image's shape. Resized whole, a 1 x N image would be 256 x 256N
    floats (48 GiB for N = 65500), so beyond WHOLE_RESIZE_AREA only the crop is computed (`_sampled_crop`),
    with the values the whole resize gives it, bit for bit.
    """
    import tensorflow as tf

    shape = tf.shape(image, out_type=tf.int64)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.constant(resize_side(image_size), tf.float32) / tf.minimum(height, width)
    # Truncated, as NVIDIA's int cast: the shorter side can land one short of resize_side (255 for
    # 256), which still leaves room for the crop. int64: a long side times 256 can pass 2^31.
    new_height = tf.cast(height * scale, tf.int64)
    new_width = tf.cast(width * scale, tf.int64)
    top = (new_height - image_size) // 2
    left = (new_width - image_size) // 2
    crop = tf.cond(
        new_height * new_width <= WHOLE_RESIZE_AREA * resize_side(image_size) ** 2,
        lambda: _resized_crop(image, new_height, new_width, top, left, image_size),
        lambda: _sampled_crop(image, new_height, new_width, top, left, image_size),
    )
    return tf.ensure_shape(crop, [image_size, image_size, 3])


def _resized_crop(image: tf.Tensor, new_height: tf.Tensor, new_width: tf.Tensor, top: tf.Tensor, left: tf.Tensor,
                  image_size: int) -> tf.Tensor:
    """The crop of the whole image resized by TensorFlow 1's kernel: what NVIDIA's evaluation does."""
    import tensorflow as tf

    resized = tf.compat.v1.image.resize(
        image, tf.cast(tf.stack([new_height, new_width]), tf.int32),
        method=tf.compat.v1.image.ResizeMethod.BILINEAR, align_corners=False,
    )
    resized = tf.cast(resized, tf.float32)  # the v1 resize returns its input unchanged when the size is the same
    return tf.slice(resized, tf.stack([top, left, tf.constant(0, tf.int64)]), [image_size, image_size, 3])


def _sampled_crop(image: tf.Tensor, new_height: tf.Tensor, new_width: tf.Tensor, top: tf.Tensor, left: tf.Tensor,
                  image_size: int) -> tf.Tensor:
    """`_resized_crop`'s values computed for the crop only: each pixel from the four source pixels the
    kernel reads for it, with its weights and its order of operations (a different order rounds
    differently). size x size pixels, whatever the image's shape."""
    import tensorflow as tf

    shape = tf.shape(image, out_type=tf.int64)
    above, below, weight_y = _source_points(shape[0], new_height, top, image_size)
    left_of, right_of, weight_x = _source_points(shape[1], new_width, left, image_size)

    def pixels(rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
        grid = tf.stack(tf.meshgrid(rows, cols, indexing="ij"), axis=-1)  # [size, size, 2]
        return tf.cast(tf.gather_nd(image, grid), tf.float32)

    weight_x, weight_y = weight_x[None, :, None], weight_y[:, None, None]
    top_left, top_right = pixels(above, left_of), pixels(above, right_of)
    bottom_left, bottom_right = pixels(below, left_of), pixels(below, right_of)
    upper = top_left + (top_right - top_left) * weight_x  # compute_lerp in resize_bilinear_op.cc
    lower = bottom_left + (bottom_right - bottom_left) * weight_x
    return upper + (lower - upper) * weight_y


def _source_points(in_size: tf.Tensor, out_size: tf.Tensor, start: tf.Tensor, count: int) -> tuple[tf.Tensor, ...]:
    """Where output pixels start..start+count-1 of the legacy bilinear resize from in_size to out_size read
    the source, as TensorFlow's kernel computes it (resize_bilinear_op.cc, no half-pixel centres, no
    align_corners): point = i * (in / out) in float32, lower = floor, upper = ceil clamped to the last
    pixel, weight = point - floor. (lower, upper, weight), each [count]."""
    import tensorflow as tf

    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    point = tf.cast(tf.range(start, start + count), tf.float32) * scale
    floor = tf.floor(point)
    last = in_size - 1
    lower = tf.clip_by_value(tf.cast(floor, tf.int64), 0, last)  # its upper clamp only guards the gather
    upper = tf.minimum(tf.cast(tf.math.ceil(point), tf.int64), last)
    return lower, upper, point - floor


def normalize(images: tf.Tensor) -> tf.Tensor:
    """(x - mean) / std per RGB channel, float32, for one image or a batch (channels last)."""
    import tensorflow as tf

    mean = tf.constant(MEAN_RGB, tf.float32)
    std = tf.constant(STD_RGB, tf.float32)
    return (tf.cast(images, tf.float32) - mean) / std
