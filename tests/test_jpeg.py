import numpy as np
import pytest
import tensorflow as tf

from pipeline.data.jpeg import JpegError, add_exif, read_jpeg_header
from pipeline.data.sample import encode_jpeg

PIXELS = np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("grayscale", "progressive", "components"),
    [(False, False, 3), (True, False, 1), (False, True, 3), (True, True, 1)],
)
def test_header_dimensions_components_and_mode(grayscale, progressive, components):
    jpeg = encode_jpeg(PIXELS, quality=90, grayscale=grayscale, progressive=progressive)
    header = read_jpeg_header(jpeg)
    assert (header.height, header.width) == (37, 53)
    assert header.components == components
    assert header.progressive == progressive
    assert not header.exif


def test_exif_segment_is_found_and_the_image_still_decodes():
    plain = encode_jpeg(PIXELS, quality=90, grayscale=False, progressive=False)
    jpeg = add_exif(plain)
    assert read_jpeg_header(jpeg).exif
    np.testing.assert_array_equal(tf.io.decode_jpeg(jpeg).numpy(), tf.io.decode_jpeg(plain).numpy())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x89PNG\r\n\x1a\n", "no SOI"),
        (b"", "no SOI"),
        (b"\xff\xd8", "truncated"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "runs past the end"),
        (b"\xff\xd8\xff\xda\x00\x02", "before any start-of-frame"),
    ],
)
def test_bad_bytes_raise_jpeg_error(data, message):
    with pytest.raises(JpegError, match=message):
        read_jpeg_header(data)


def test_truncated_before_the_frame_header():
    jpeg = encode_jpeg(PIXELS, quality=90, grayscale=False, progressive=False)
    sof = jpeg.index(b"\xff\xc0")
    with pytest.raises(JpegError):
        read_jpeg_header(jpeg[: sof + 5])
