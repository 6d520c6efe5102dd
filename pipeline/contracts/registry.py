"""The registry's names: the model, its versions and the key prefix they live under, and the rule for the
file names inside a version. s3://BUCKET/PREFIX/MODEL/vNNNN/ (pipeline.publish.registry keeps the protocol).
"""

from __future__ import annotations

import re

from pipeline.contracts.names import CLAIM, MANIFEST

MODEL = "resnet50"  # the model's name in the registry: s3://BUCKET/PREFIX/MODEL/vNNNN/
# fullmatch, ASCII digits: "$" also matches before a trailing newline, and \d takes any script's digits.
VERSION_RE = re.compile(r"v([0-9]{4,})")
# One segment of a key prefix, or a model name: no empty, "." or ".." segment (the key would read as a
# path it is not), nothing but ASCII letters, digits, '.', '_' and '-'.
SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
# The registry's prefix inside the bucket, e.g. "models" or "team-a/models". The DAG's `prefix` Param takes
# it as its JSON-schema pattern, and every registry call checks it (`model_prefix`).
PREFIX_PATTERN = rf"^{SEGMENT}(/{SEGMENT})*$"



def format_version(number: int) -> str:
    return f"v{number:04d}"


def version_number(version: str) -> int:
    match = VERSION_RE.fullmatch(version)
    if not match:
        raise ValueError(f"{version!r} is not a version name (v0001, v0002, ...)")
    return int(match.group(1))


def model_prefix(prefix: str, model: str) -> str:
    """`{prefix}/{model}/`, once both are checked: a prefix such as "", "/" or "a/../b" would point the
    registry, and the gate's champion, at a location other than the one it reads as."""
    if not isinstance(prefix, str) or not re.fullmatch(PREFIX_PATTERN, prefix):
        raise ValueError(f"prefix {prefix!r}: must match {PREFIX_PATTERN} (segments of letters, digits, '.', '_', "
                         "'-', joined by single '/')")
    if not isinstance(model, str) or not re.fullmatch(SEGMENT, model):
        raise ValueError(f"model name {model!r}: must match {SEGMENT}")
    return f"{prefix}/{model}/"


def version_prefix(prefix: str, model: str, version: str) -> str:
    return f"{model_prefix(prefix, model)}{version}/"



def check_relative_name(name: str) -> str:
    """A plain relative path, so that the key it comes from and the file it becomes are one and the same
    (`a/../b` and `b` are two keys but one file, `a//etc/x` joins to `/etc/x`): every S3 key that becomes a
    local file goes through this (a version's files, NVIDIA's checkpoint). ValueError if it is not."""
    if any(p in ("", ".", "..") for p in name.split("/")) or "\\" in name or any(ord(c) < 32 for c in name):
        raise ValueError(f"{name!r}: not a plain relative file name (no empty, '.' or '..' segment, no leading "
                         "'/', no '\\', no control character)")
    return name


def check_file_name(name: str) -> str:
    """A file's name inside a version: a plain relative path (`check_relative_name`), not one the registry
    keeps for itself. ValueError if it is not."""
    check_relative_name(name)
    if name in (MANIFEST, CLAIM):
        raise ValueError(f"{name!r}: reserved for the registry")
    return name

