"""A reader of TensorFlow frozen graphs (``GraphDef`` protocol buffers), enough to convert the pinned detector
without TensorFlow: node names, ops, inputs, attributes and constant tensors.

    nodes = read_graph(Path("frozen_inference_graph.pb").read_bytes())
    nodes["FeatureExtractor/MobilenetV2/Conv/Conv2D"].op             # "Conv2D"
    nodes[...].attr["strides"], nodes[...].attr["padding"]          # [1, 2, 2, 1], b"SAME"
    constant(nodes, "FeatureExtractor/MobilenetV2/Conv/weights")     # numpy array, TensorFlow's layout

Only the protocol buffer wire format is decoded (varints, fixed 32/64-bit and length-delimited fields), field
numbers as tensorflow/core/framework/{graph,node_def,attr_value,tensor,tensor_shape}.proto define them; a field
this reader does not know is skipped, so a newer writer's additions are ignored rather than misread.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

# TensorFlow DataType enum values -> numpy dtypes (the ones frozen detection graphs hold)
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 9: np.int64, 10: np.bool_}


class GraphError(ValueError):
    """The bytes are not a frozen graph this reader understands; the message says where it stopped."""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise GraphError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise GraphError("varint too long")


def fields(data: memoryview):
    """``(field number, wire type, value)`` of each field of one message: ints for varints and fixed fields (raw
    bytes for fixed ones), memoryviews for length-delimited ones."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise GraphError(f"field {number} runs past its message")
            value, pos = data[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise GraphError(f"wire type {wire} of field {number} is not one protocol buffers write")
        yield number, wire, value


def _packed_varints(value) -> list[int]:
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v - (1 << 64) if v >= 1 << 63 else v)
    return out


@dataclass
class Tensor:
    dtype: int = 1
    shape: tuple[int, ...] = ()
    content: bytes = b""
    float_val: list[float] = field(default_factory=list)
    int_val: list[int] = field(default_factory=list)

    def array(self) -> np.ndarray:
        if self.dtype not in DTYPES:
            raise GraphError(f"tensor of TensorFlow dtype {self.dtype} is not read here")
        dtype = DTYPES[self.dtype]
        count = int(np.prod(self.shape)) if self.shape else 1
        if self.content:
            return np.frombuffer(self.content, dtype=dtype).reshape(self.shape).copy()
        values = self.float_val if dtype in (np.float32, np.float64) else self.int_val
        if not values:
            return np.zeros(self.shape, dtype=dtype)
        return np.full(count, values[0], dtype=dtype).reshape(self.shape) if len(values) == 1 else \
            np.asarray(values, dtype=dtype).reshape(self.shape)


def _shape(data) -> tuple[int, ...]:
    dims = []
    for number, _, value in fields(data):
        if number == 2:  # dim
            size = 0
            for n, _, v in fields(value):
                if n == 1:
                    size = v - (1 << 64) if v >= 1 << 63 else v
            dims.append(size)
    return tuple(dims)


def _tensor(data) -> Tensor:
    t = Tensor()
    for number, wire, value in fields(data):
        if number == 1:
            t.dtype = value
        elif number == 2:
            t.shape = _shape(value)
        elif number == 4:
            t.content = bytes(value)
        elif number == 5:
            t.float_val += list(struct.unpack(f"<{len(value) // 4}f", value)) if wire == 2 else \
                [struct.unpack("<f", value)[0]]
        elif number == 7:
            t.int_val += _packed_varints(value) if wire == 2 else [value]
    return t


def _list(data) -> list:
    out = []
    for number, wire, value in fields(data):
        if number == 2:
            out.append(bytes(value))
        elif number == 3:
            out += _packed_varints(value) if wire == 2 else [value - (1 << 64) if value >= 1 << 63 else value]
        elif number == 4:
            out += list(struct.unpack(f"<{len(value) // 4}f", value)) if wire == 2 else \
                [struct.unpack("<f", value)[0]]
    return out


def _attr_value(data):
    for number, _wire, value in fields(data):
        if number == 1:
            return _list(value)
        if number == 2:
            return bytes(value)
        if number == 3:
            return value - (1 << 64) if value >= 1 << 63 else value
        if number == 4:
            return struct.unpack("<f", value)[0]
        if number == 5:
            return bool(value)
        if number == 6:
            return value
        if number == 7:
            return _shape(value)
        if number == 8:
            return _tensor(value)
    return None


@dataclass
class Node:
    name: str = ""
    op: str = ""
    inputs: list[str] = field(default_factory=list)
    attr: dict = field(default_factory=dict)


def _node(data) -> Node:
    node = Node()
    for number, _, value in fields(data):
        if number == 1:
            node.name = bytes(value).decode()
        elif number == 2:
            node.op = bytes(value).decode()
        elif number == 3:
            node.inputs.append(bytes(value).decode())
        elif number == 5:  # map<string, AttrValue> entry
            key, attr = None, None
            for n, _, v in fields(value):
                if n == 1:
                    key = bytes(v).decode()
                elif n == 2:
                    attr = _attr_value(v)
            if key is not None:
                node.attr[key] = attr
    return node


def read_graph(data: bytes) -> dict[str, Node]:
    """Every node of a serialized ``GraphDef``, by name.

    Raises:
        GraphError: the bytes are not such a graph.
    """
    nodes = {}
    for number, wire, value in fields(memoryview(data)):
        if number == 1 and wire == 2:
            node = _node(value)
            nodes[node.name] = node
    if not nodes:
        raise GraphError("no node found: not a TensorFlow GraphDef")
    return nodes


def source(name: str) -> str:
    """The node an input names (``^control`` and ``node:1`` forms reduced to the node's name)."""
    return name.lstrip("^").split(":")[0]


def constant(nodes: dict[str, Node], name: str) -> np.ndarray:
    """The value of the constant ``name`` (through ``Identity`` nodes, as frozen graphs wire their weights)."""
    node = nodes[source(name)]
    while node.op == "Identity":
        node = nodes[source(node.inputs[0])]
    if node.op != "Const":
        raise GraphError(f"{name} is a {node.op}, not a constant")
    return node.attr["value"].array()
