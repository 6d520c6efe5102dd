"""`tf.train.Example` message classes built from a descriptor, so parsing needs no TensorFlow.

The validator parses every record of ImageNet in worker processes; importing TensorFlow in each
costs seconds, and its Example class is the same upb protobuf underneath. These classes have the
field numbers of tensorflow/core/example/{example,feature}.proto, so they read the same bytes
(checked against TensorFlow-written records in the tests).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "rn50.example"


def _add_message(fd: descriptor_pb2.FileDescriptorProto, name: str, *fields: tuple) -> descriptor_pb2.DescriptorProto:
    message = fd.message_type.add(name=name)
    for field_name, number, field_type, label, type_name in fields:
        field = message.field.add(name=field_name, number=number, type=field_type, label=label)
        if type_name:
            field.type_name = f".{_PACKAGE}.{type_name}"
    return message


@cache
def example_class() -> Any:
    fd = descriptor_pb2.FileDescriptorProto(name="rn50/example.proto", package=_PACKAGE, syntax="proto3")
    for name, scalar in (("BytesList", _F.TYPE_BYTES), ("FloatList", _F.TYPE_FLOAT), ("Int64List", _F.TYPE_INT64)):
        _add_message(fd, name, ("value", 1, scalar, _F.LABEL_REPEATED, None))
    feature = _add_message(
        fd,
        "Feature",
        ("bytes_list", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "BytesList"),
        ("float_list", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "FloatList"),
        ("int64_list", 3, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "Int64List"),
    )
    feature.oneof_decl.add(name="kind")
    for field in feature.field:
        field.oneof_index = 0
    features = _add_message(fd, "Features", ("feature", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Features.FeatureEntry"))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(
        name="value", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL, type_name=f".{_PACKAGE}.Feature"
    )
    entry.options.map_entry = True
    _add_message(fd, "Example", ("features", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "Features"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Example"))


def parse_feature_map(data: bytes) -> Any:
    """The `features.feature` map of a serialized Example; ValueError if the bytes are not one."""
    try:
        return example_class().FromString(data).features.feature
    except DecodeError as exc:
        raise ValueError(f"not a tf.train.Example: {exc}") from None

