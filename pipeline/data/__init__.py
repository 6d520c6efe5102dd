"""The ImageNet TFRecord data: its format, label map, shard names, sample generator and checks."""
