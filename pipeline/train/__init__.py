"""Training and evaluation: NVIDIA's ResNet50 v1.5 recipe as small modules (config, schedule, loop)."""
