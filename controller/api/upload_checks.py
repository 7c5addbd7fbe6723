"""Upload checks that read headers and sizes, never the payload: samples ``.npz`` and ONNX models.

Why not ``np.load`` / ``onnx.load``: a 1 MB ``.npz`` can inflate to gigabytes, a 216-byte one can
declare a (1e11, 16) array, and ``onnx.load`` + ``onnx.checker`` held about three copies of a
model in memory. Here a samples file is judged from its zip directory (declared sizes) and each
member's ``.npy`` header (``np.lib.format``), bounded by :class:`NpzLimits`, before any array is
decompressed; Python's ``zipfile`` never inflates a member past its declared size, so a file that
passes these checks can be loaded later within the same bound. A model is walked at the protobuf
wire level: everything but the initializers' weight bytes is copied into a small "skeleton" model
whose initializers point, as ONNX external data, at their byte ranges inside the upload itself;
``onnx.checker`` then checks that skeleton. Memory stays at the size of the graph, not the weights.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from controller.api.errors import ApiError

# ONNX protobuf field numbers (onnx/onnx.proto3): only the ones the walk needs
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_DIMS, _TENSOR_DATA_TYPE = 1, 2
_TENSOR_FLOAT_DATA, _TENSOR_RAW_DATA, _TENSOR_DOUBLE_DATA = 4, 9, 10
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_EXTERNAL_FIELDS = {_TENSOR_RAW_DATA, _TENSOR_FLOAT_DATA, _TENSOR_DOUBLE_DATA}  # little-endian bytes as stored
_INLINE_MAX = 64 * 1024  # weight fields smaller than this stay in the skeleton


@dataclass(frozen=True)
class NpzLimits:
    """Bounds on a samples ``.npz``; from ``Settings`` (``EDGEFLEET_SAMPLES_MAX_MB``, ``..._MAX_ARRAYS``)."""

    max_bytes: int = 256 * 1024 * 1024
    max_arrays: int = 64


@dataclass(frozen=True)
class ArrayHeader:
    """What a ``.npy`` member declares about itself."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


def _bad_samples(message: str, status: int = 422) -> ApiError:
    return ApiError(status, f"samples .npz refused: {message}",
                    code="too_large" if status == 413 else "invalid_input")


def inspect_npz(path: Path, limits: NpzLimits = NpzLimits()) -> dict[str, ArrayHeader]:
    """Shapes and dtypes of every array in an ``.npz``, read from headers only.

    Raises ApiError 413 when the declared sizes pass ``limits`` and 422 when the file is not a
    plain (pickle-free) ``.npz`` or a header contradicts its member's size.

    Example:
        >>> inspect_npz(Path("samples.npz"))["input_ids"].shape  # doctest: +SKIP
        (16, 128)
    """
    import numpy as np

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _bad_samples(f"not a zip archive ({exc})") from exc
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_arrays:
            raise _bad_samples(f"{len(members)} arrays, the limit is {limits.max_arrays} "
                               "(EDGEFLEET_SAMPLES_MAX_ARRAYS)", 413)
        declared = sum(m.file_size for m in members)
        if declared > limits.max_bytes:
            raise _bad_samples(f"inflates to {declared} bytes, the limit is {limits.max_bytes} "
                               "(EDGEFLEET_SAMPLES_MAX_MB)", 413)
        headers: dict[str, ArrayHeader] = {}
        for member in members:
            if not member.filename.endswith(".npy") or member.is_dir():
                raise _bad_samples(f"member {member.filename!r} is not a .npy array")
            name = member.filename[:-4]
            try:
                with archive.open(member) as fh:
                    header = _npy_header(fh, np)
            except (ValueError, EOFError, OSError, zipfile.BadZipFile, NotImplementedError) as exc:
                raise _bad_samples(f"array {name!r} has an unreadable header ({exc})") from exc
            shape, dtype, header_len = header
            if dtype.hasobject:
                raise _bad_samples(f"array {name!r} holds Python objects (pickle); send plain numeric arrays")
            numel = math.prod(shape)
            nbytes = numel * dtype.itemsize
            if nbytes > limits.max_bytes:
                raise _bad_samples(f"array {name!r} declares shape {shape} ({nbytes} bytes), the limit is "
                                   f"{limits.max_bytes} (EDGEFLEET_SAMPLES_MAX_MB)", 413)
            if header_len + nbytes != member.file_size:
                raise _bad_samples(f"array {name!r} declares shape {shape} of {dtype} ({nbytes} bytes) but its "
                                   f"member holds {member.file_size - header_len}")
            headers[name] = ArrayHeader(name, tuple(shape), dtype.str, nbytes)
    return headers


def _npy_header(fh: BinaryIO, np: Any) -> tuple[tuple[int, ...], Any, int]:
    """(shape, dtype, bytes before the data) of one ``.npy`` stream, reading only its header."""
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        shape, _fortran, dtype = fmt.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, _fortran, dtype = fmt.read_array_header_2_0(fh)
    else:  # pragma: no cover - read_magic already refuses unknown versions
        raise ValueError(f"unknown .npy version {version}")
    return tuple(int(d) for d in shape), dtype, fh.tell()


def check_samples(path: Path, inputs: dict[str, tuple[int, ...]], limits: NpzLimits = NpzLimits()) -> int:
    """Validate a samples ``.npz`` from its headers: keys = the graph's inputs, same sample count.

    Returns the number of samples. Nothing is decompressed (see :func:`inspect_npz`).
    """
    shapes = {k: h.shape for k, h in inspect_npz(path, limits).items()}
    if set(shapes) != set(inputs):
        raise ApiError(422, f"samples .npz keys {sorted(shapes)} must be the model's input names {sorted(inputs)}",
                       code="invalid_input")
    counts = {s[0] if s else 0 for s in shapes.values()}
    if len(counts) != 1 or 0 in counts:
        raise ApiError(422, f"samples arrays must hold the same number (>0) of samples on axis 0, got {shapes}",
                       code="invalid_input")
    for key, shape in shapes.items():
        want = inputs[key]
        if len(shape) != len(want) or any(w > 0 and g != w for g, w in zip(shape[1:], want[1:], strict=True)):
            raise ApiError(422, f"samples[{key!r}] has shape {shape}, the model input is {want} (-1 = any)",
                           code="invalid_input")
    return counts.pop()


def check_zip_limits(path: Path, max_bytes: int, max_members: int = 64) -> None:
    """A zipped model upload may not inflate past ``max_bytes`` (declared sizes; zipfile never exceeds them)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ApiError(422, f"field 'file': not a readable zip ({exc})", code="invalid_model") from exc
    declared = sum(m.file_size for m in members)
    if len(members) > max_members or declared > max_bytes:
        raise ApiError(413, f"field 'file': the zip holds {len(members)} files inflating to {declared} bytes; the "
                            f"limits are {max_members} files and {max_bytes} bytes (EDGEFLEET_MAX_UPLOAD_MB)",
                       code="too_large")


# ------------------------------------------------------------------------------------------ ONNX
class _WireError(ValueError):
    """The file is not a well-formed protobuf (or uses a wire type ONNX never does)."""


def _varint(fh: BinaryIO) -> int:
    shift = result = 0
    while True:
        byte = fh.read(1)
        if not byte:
            raise _WireError("truncated varint")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise _WireError("varint longer than 10 bytes")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    """One encoded field (wire 2 = length-delimited payload, 0 = payload is the varint's bytes)."""
    tag = _encode_varint(number << 3 | wire)
    return tag + (_encode_varint(len(payload)) + payload if wire == 2 else payload)


@dataclass(frozen=True)
class _Field:
    number: int
    wire: int
    start: int  # offset of the tag
    value_at: int  # offset of the value (after the length for wire type 2)
    end: int
    varint: int = 0


def _walk(fh: BinaryIO, start: int, end: int) -> Iterator[_Field]:
    """Fields of one message between ``start`` and ``end``, without reading length-delimited values."""
    fh.seek(start)
    pos = start
    while pos < end:
        tag = _varint(fh)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _WireError("field number 0")
        value = 0
        if wire == 0:
            value = _varint(fh)
            value_at = fh.tell()
            stop = value_at
        elif wire == 2:
            length = _varint(fh)
            value_at = fh.tell()
            stop = value_at + length
        elif wire in (1, 5):
            value_at = fh.tell()
            stop = value_at + (8 if wire == 1 else 4)
        else:
            raise _WireError(f"wire type {wire} (groups are not used by ONNX)")
        if stop > end:
            raise _WireError("field runs past the end of its message")
        yield _Field(number, wire, pos, value_at, stop, value)
        pos = stop
        fh.seek(pos)


class _Skeleton:
    """Copies a model's structure into memory, leaving weight bytes in the file as external data."""

    def __init__(self, fh: BinaryIO, size: int, location: str, max_bytes: int) -> None:
        self.fh, self.size, self.location, self.max_bytes = fh, size, location, max_bytes
        self.copied = 0
        self.weights: list[tuple[str, int, int, int, list[int]]] = []  # name, dtype, offset, length, dims

    def _copy(self, f: _Field) -> bytes:
        self.copied += f.end - f.start
        if self.copied > self.max_bytes:
            raise ApiError(413, f"the model's graph (without weights) exceeds {self.max_bytes} bytes "
                                "(EDGEFLEET_MAX_GRAPH_MB)", code="too_large")
        self.fh.seek(f.start)
        return self.fh.read(f.end - f.start)

    def model(self) -> bytes:
        out = bytearray()
        for f in list(_walk(self.fh, 0, self.size)):
            out += self._graph(f) if f.number == _MODEL_GRAPH and f.wire == 2 else self._copy(f)
        return bytes(out)

    def _graph(self, graph: _Field) -> bytes:
        body = bytearray()
        for f in list(_walk(self.fh, graph.value_at, graph.end)):
            body += self._tensor(f) if f.number == _GRAPH_INITIALIZER and f.wire == 2 else self._copy(f)
        return _field(_MODEL_GRAPH, 2, bytes(body))

    def _tensor(self, tensor: _Field) -> bytes:
        body = bytearray()
        name, dtype, dims, weight = "", 0, [], None
        for f in list(_walk(self.fh, tensor.value_at, tensor.end)):
            if f.number == _TENSOR_EXTERNAL_DATA or (f.number == _TENSOR_DATA_LOCATION and f.varint != 1):
                continue  # stale external-data entries of a tensor stored inline (DEFAULT): ignored by onnx too
            if f.number == _TENSOR_DATA_LOCATION:
                raise ApiError(422, "field 'file': the model keeps its weights in external data files, which were "
                                    "not uploaded; send one .zip holding the .onnx and those files (torch's default "
                                    "export writes model.onnx + model.onnx.data)", code="invalid_model")
            if f.number in _EXTERNAL_FIELDS and f.wire == 2 and f.end - f.value_at > _INLINE_MAX:
                if weight is not None:
                    raise ApiError(422, "the ONNX model has a tensor with two data fields", code="invalid_model")
                weight = (f.value_at, f.end - f.value_at)
                continue
            raw = self._copy(f)
            body += raw
            if f.number == _TENSOR_DATA_TYPE and f.wire == 0:
                dtype = f.varint
            elif f.number == _TENSOR_DIMS:
                dims += _dims(f, raw)
            elif f.number == 8 and f.wire == 2:  # name
                name = raw[f.value_at - f.start:].decode("utf-8", "replace")
        if weight is not None:
            offset, length = weight
            self.weights.append((name, dtype, offset, length, dims))
            body += _field(_TENSOR_DATA_LOCATION, 0, _encode_varint(1))
            for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(length))):
                body += _field(_TENSOR_EXTERNAL_DATA, 2, _field(1, 2, key.encode()) + _field(2, 2, value.encode()))
        return _field(_GRAPH_INITIALIZER, 2, bytes(body))


def _dims(f: _Field, raw: bytes) -> list[int]:
    """int64 dims, packed (wire 2) or one by one (wire 0)."""
    if f.wire == 0:
        return [_signed(f.varint)]
    import io

    payload = io.BytesIO(raw[f.value_at - f.start:])
    out = []
    while payload.tell() < len(raw) - (f.value_at - f.start):
        out.append(_signed(_varint(payload)))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def check_onnx(path: Path, *, max_graph_bytes: int = 256 * 1024 * 1024, keep_skeleton: Path | None = None,
               ) -> dict[str, Any]:
    """Check an uploaded ONNX file with ``onnx.checker`` without loading its weights; 422 naming the problem.

    Returns opset, input/output names, node count and input shapes (``-1`` = symbolic). With
    ``keep_skeleton`` the weight-less skeleton is written there (its initializers point into ``path``),
    for later checks that only need the graph (e.g. the samples' input contract).
    """
    import onnx
    from google.protobuf.message import DecodeError

    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            skeleton = _Skeleton(fh, size, path.name, max_graph_bytes)
            data = skeleton.model()
        model = onnx.ModelProto.FromString(data)
    except (_WireError, DecodeError, ValueError, OSError) as exc:
        raise ApiError(422, f"the upload is not an ONNX model (it does not parse as an ONNX protobuf: {exc})",
                       code="invalid_model") from exc
    if not model.graph.node and not model.graph.output:
        raise ApiError(422, "the upload is not an ONNX model (empty graph)", code="invalid_model")
    for name, dtype, _offset, length, dims in skeleton.weights:
        _check_weight_size(name, dtype, length, dims)
    fd, skel_name = tempfile.mkstemp(dir=path.parent, prefix=".skeleton-", suffix=".onnx")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        onnx.checker.check_model(skel_name, full_check=False)
        if keep_skeleton is not None:
            os.replace(skel_name, keep_skeleton)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0][:500].replace(str(path.parent), "")
        raise ApiError(422, f"the ONNX model fails onnx.checker: {first}", code="invalid_model") from exc
    finally:
        Path(skel_name).unlink(missing_ok=True)
    return _describe(model)


def _check_weight_size(name: str, dtype: int, length: int, dims: list[int]) -> None:
    import onnx

    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(dtype).itemsize
    except (KeyError, ValueError, TypeError):
        return  # strings and exotic types: the checker judges them
    if any(d < 0 for d in dims):
        raise ApiError(422, f"initializer {name!r} has a negative dimension {dims}", code="invalid_model")
    if math.prod(dims) * itemsize != length:
        raise ApiError(422, f"initializer {name!r} of shape {dims} needs {math.prod(dims) * itemsize} bytes, "
                            f"the file holds {length}", code="invalid_model")


def _describe(model: Any) -> dict[str, Any]:
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    shapes = {i.name: tuple(d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim)
              for i in graph_inputs}
    return {"opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "inputs": [i.name for i in graph_inputs], "outputs": [o.name for o in model.graph.output],
            "nodes": len(model.graph.node), "input_shapes": shapes}


__all__ = ["ArrayHeader", "NpzLimits", "check_onnx", "check_samples", "check_zip_limits", "inspect_npz"]
