"""The one C extension, the validator's shard scanner; everything else is declared in pyproject.toml.

Here rather than in pyproject.toml because setuptools still calls `ext-modules` there experimental.
Optional: without a C compiler the install still succeeds, and the scan falls back to the Python
reference (with a warning), several times slower.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pipeline.data._scan", sources=["pipeline/data/_scan.c"], optional=True)])
