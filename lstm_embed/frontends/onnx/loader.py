"""An .onnx file as a protobuf ModelProto and its constant tensors as numpy arrays, with bounded
memory: nothing from the file is executed, external data is read only from files inside the
model's folder, and every size is checked before anything is allocated."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

MAX_FILE_BYTES = 1 << 30  # the .onnx protobuf itself (protobuf's own limit is 2 GiB)
MAX_TENSOR_ELEMENTS = 1 << 26  # one weight tensor or folded constant: 64 Mi values
MAX_TOTAL_ELEMENTS = 1 << 28  # every constant of the model together
MAX_NODES = 100_000

# ONNX TensorProto data types lstm-embed reads as numbers (others: a one-line refusal)
DTYPES = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
    7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
}  # fmt: skip


class OnnxFileError(ValueError):
    """The file cannot be read; the message is one line and names the file."""


def load_proto(path: Path) -> Any:
    """The ModelProto of ``path`` without its external data (read later, checked)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        size = path.stat().st_size
    except OSError as error:
        raise OnnxFileError(f"{path}: cannot read the file ({error.strerror})") from None
    if not path.is_file():
        raise OnnxFileError(f"{path}: not a file")
    if size > MAX_FILE_BYTES:
        raise OnnxFileError(f"{path}: {size} bytes; supported: up to {MAX_FILE_BYTES} bytes")
    data = path.read_bytes()
    try:
        proto = onnx.ModelProto()
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as error:
        detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise OnnxFileError(f"{path}: not an ONNX model (protobuf: {detail})") from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise OnnxFileError(f"{path}: not an ONNX model (no graph, or a graph without nodes)")
    if len(proto.graph.node) > MAX_NODES:
        raise OnnxFileError(f"{path}: {len(proto.graph.node)} nodes; supported: up to {MAX_NODES}")
    return proto


class Tensors:
    """Reads TensorProtos to arrays, counting every element read against MAX_TOTAL_ELEMENTS."""

    def __init__(self, folder: Path, source: str) -> None:
        self.folder = folder.resolve()
        self.source = source
        self.total = 0

    def count(self, what: str, elements: int) -> None:
        if elements > MAX_TENSOR_ELEMENTS:
            raise OnnxFileError(
                f"{self.source}: {what} has {elements} values; supported: up to"
                f" {MAX_TENSOR_ELEMENTS} per tensor"
            )
        self.total += elements
        if self.total > MAX_TOTAL_ELEMENTS:
            raise OnnxFileError(
                f"{self.source}: the model's constants hold more than {MAX_TOTAL_ELEMENTS}"
                " values; supported: models up to that size"
            )

    def array(self, tensor: Any) -> np.ndarray:
        from onnx import numpy_helper

        name = tensor.name or "a constant"
        dims = [int(d) for d in tensor.dims]
        if any(d < 0 for d in dims):
            raise OnnxFileError(f"{self.source}: tensor '{name}' has a negative dimension {dims}")
        elements = int(np.prod(dims, dtype=object)) if dims else 1
        self.count(f"tensor '{name}'", elements)
        dtype = DTYPES.get(tensor.data_type)
        if dtype is None:
            raise OnnxFileError(
                f"{self.source}: tensor '{name}' has ONNX data type {tensor.data_type};"
                " supported: float16/32/64 and integer types"
            )
        if tensor.data_location == 1:  # EXTERNAL
            return self._external(tensor, name, dims, np.dtype(dtype))
        try:
            value = numpy_helper.to_array(tensor)
        except Exception as error:  # a malformed raw_data length, etc.
            raise OnnxFileError(
                f"{self.source}: tensor '{name}' cannot be read ({type(error).__name__})"
            ) from None
        return np.asarray(value).reshape(dims)

    def _external(self, tensor: Any, name: str, dims: list[int], dtype: np.dtype) -> np.ndarray:
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        target = (self.folder / location).resolve()
        if not location or os.path.isabs(location) or not target.is_relative_to(self.folder):
            raise OnnxFileError(
                f"{self.source}: tensor '{name}': external data path {location!r} is outside"
                " the model's folder; supported: a file beside the model"
            )
        try:
            offset, length = int(info.get("offset", 0)), info.get("length")
        except ValueError:
            raise OnnxFileError(f"{self.source}: tensor '{name}': bad external offset") from None
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize if dims else dtype.itemsize
        if length is not None and int(length) != expected:
            raise OnnxFileError(
                f"{self.source}: tensor '{name}': external length {length} != {expected} bytes"
            )
        if not target.is_file():
            raise OnnxFileError(
                f"{self.source}: tensor '{name}': external data file {location!r} is missing"
            )
        if offset < 0 or offset + expected > target.stat().st_size:
            raise OnnxFileError(
                f"{self.source}: tensor '{name}': external data file {location!r} is shorter"
                f" than offset {offset} + {expected} bytes"
            )
        with open(target, "rb") as handle:
            handle.seek(offset)
            raw = handle.read(expected)
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(dims)
