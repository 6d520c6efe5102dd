"""The ResNet50 v1.5 classifier. Imports Keras, so only training and evaluation code should import this package."""

from pipeline.model.resnet import build_resnet50

__all__ = ["build_resnet50"]
