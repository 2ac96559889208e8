"""V2 REST codec: JSON tensors and the binary tensor data extension, for every datatype onnxruntime runs.

Binary extension (as tritonclient speaks it): the body is a JSON header of
`Inference-Header-Content-Length` bytes followed by the raw tensors, in input order, each
announced by `parameters.binary_data_size`. Fixed-size types are little-endian row-major; BYTES
elements are each a 4-byte little-endian length then the bytes. Without that header, a body whose
JSON object is followed by more bytes is read the same way, the header ending where the object
closes (so curl or wrk can post binary tensors from a file).
"""

from __future__ import annotations

import math
import re
import struct
from typing import Any

import numpy as np
import orjson

from runtimes import jsonload
from runtimes.errors import BadRequest
from runtimes.v2.types import DTYPES, InferRequest, InferResponse, v2_datatype

_LEN = struct.Struct("<I")
# numpy's limit on dimensions (a longer shape can never be an array) and a bound on each one.
MAX_DIMS = 64
MAX_DIM = 2**40
# Deepest nesting the JSON header of a binary-extension body may have when its end must be found
# by scanning (V2 headers are a few levels deep; the scan is iterative, so this is a sanity bound).
MAX_HEADER_DEPTH = 64
# Longest leading JSON object looked for in front of binary data sent without its length.
MAX_SCANNED_HEADER = 1 << 20
_STRUCTURAL = re.compile(rb'[\[\]{}"]')
_STRING_REST = re.compile(rb'(?:[^"\\]|\\.)*"', re.S)  # the rest of a JSON string after its opening quote


def bytes_from_wire(buf: bytes | memoryview, count: int, where: str) -> np.ndarray:
    """Decode `count` length-prefixed BYTES elements."""
    if count * 4 > len(buf):  # before allocating: every element takes at least its 4-byte length
        raise BadRequest(
            f"{where}: BYTES data ends inside element {len(buf) // 4} of {count} (each takes at least 4 bytes)"
        )
    out = np.empty(count, dtype=np.object_)
    pos = 0
    view = memoryview(buf)
    for i in range(count):
        if pos + 4 > len(view):
            raise BadRequest(f"{where}: BYTES data ends inside element {i} of {count}")
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + n > len(view):
            raise BadRequest(f"{where}: BYTES element {i} claims {n} bytes, only {len(view) - pos} left")
        out[i] = bytes(view[pos : pos + n])
        pos += n
    if pos != len(view):
        raise BadRequest(f"{where}: {len(view) - pos} bytes left over after {count} BYTES elements")
    return out


def bytes_to_wire(arr: np.ndarray) -> bytes:
    """Encode a BYTES array as length-prefixed elements."""
    parts: list[bytes] = []
    for item in arr.reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LEN.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def raw_to_array(raw: bytes | memoryview, datatype: str, shape: list[int], where: str) -> np.ndarray:
    """A numpy array over raw tensor bytes (binary extension or gRPC raw_*_contents)."""
    count = math.prod(shape)
    check_dims(shape, where)
    if datatype == "BYTES":
        return reshape(bytes_from_wire(raw, count, where), shape, where)
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(
            f"{where}: {len(raw)} bytes of data for shape {shape} {datatype}, expected {count * dtype.itemsize}"
        )
    return reshape(np.frombuffer(raw, dtype=dtype.newbyteorder("<")), shape, where)


def array_to_raw(arr: np.ndarray) -> bytes:
    """Raw little-endian bytes of an output array."""
    if arr.dtype.kind in "OSU":
        return bytes_to_wire(arr)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def _json_prefix_end(body: bytes | bytearray) -> int | None:
    """Byte offset where a leading JSON object ends when more bytes follow it, else None.

    An iterative scan of brackets and strings (no recursion, so any nesting is answered with 400,
    never a RecursionError), over at most MAX_SCANNED_HEADER bytes; linear in what it reads.
    """
    if not body.startswith(b"{"):
        return None
    limit = min(len(body), MAX_SCANNED_HEADER)
    depth = 0
    pos = 0
    while True:
        found = _STRUCTURAL.search(body, pos, limit)
        if found is None:
            return None
        char = body[found.start()]
        pos = found.end()
        if char == 0x22:  # '"': skip the string, escapes included
            rest = _STRING_REST.match(body, pos, limit)
            if rest is None:
                return None  # unterminated within the window: not a header followed by data
            pos = rest.end()
        elif char in (0x7B, 0x5B):  # '{' '['
            depth += 1
            if depth > MAX_HEADER_DEPTH:
                raise BadRequest(f"the JSON header is nested deeper than {MAX_HEADER_DEPTH} levels")
        else:
            depth -= 1
            if depth == 0:
                return pos if pos < len(body) else None


def check_shape(value: Any, where: str) -> list[int]:
    """A V2 shape: a list of non-negative ints."""
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise BadRequest(f"{where}: 'shape' must be a list of non-negative integers, got {value!r:.80}")
    return check_dims(value, where)


def check_dims(shape: list[int], where: str) -> list[int]:
    """BadRequest unless `shape` could be an array: at most MAX_DIMS dimensions, each at most MAX_DIM."""
    if len(shape) > MAX_DIMS:
        raise BadRequest(f"{where}: shape has {len(shape)} dimensions; at most {MAX_DIMS} are supported")
    if any(d > MAX_DIM for d in shape):
        raise BadRequest(f"{where}: shape {shape!r:.80} has a dimension over {MAX_DIM}")
    return shape


def _json_to_array(data: Any, datatype: str, shape: list[int], where: str) -> np.ndarray:
    count = math.prod(shape)
    arr: np.ndarray
    try:
        if datatype == "BYTES":
            flat = np.array(data, dtype=np.object_).reshape(-1)
            arr = np.empty(flat.size, dtype=np.object_)
            for i, item in enumerate(flat):
                arr[i] = item.encode() if isinstance(item, str) else bytes(item)
        elif datatype == "BOOL":
            arr = np.asarray(data, dtype=np.bool_).reshape(-1)
        else:
            arr = np.asarray(data, dtype=DTYPES[datatype]).reshape(-1)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f"{where}: 'data' is not a list of {datatype} values ({exc})") from None
    if arr.size != count:
        raise BadRequest(f"{where}: 'data' has {arr.size} elements but shape {shape} needs {count}")
    return reshape(arr, shape, where)


def reshape(arr: np.ndarray, shape: list[int], where: str) -> np.ndarray:
    try:
        return arr.reshape(shape)
    except ValueError as exc:  # numpy's own limits (total size beyond what an array can index)
        raise BadRequest(f"{where}: shape {shape!r:.80} is not a valid array shape ({exc})") from None


def decode_request(
    body: bytes | bytearray, header_length: int | None, max_objects_bytes: int = 64 << 20
) -> InferRequest:
    """Parse a V2 REST infer body (JSON, optionally followed by binary tensor data).

    `max_objects_bytes` bounds what the JSON may cost as Python objects (large numeric `data`
    arrays are read straight into numpy, see jsonload).
    """
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {header_length} is outside the {len(body)}-byte body")
        head, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        if body[-64:].rstrip()[-1:] not in (b"}", b""):
            # Cannot be plain JSON (it does not end with '}'): look for binary data after the JSON
            # object first. Letting orjson fail on the whole body cost ~40 us per 600 KB image.
            end = _json_prefix_end(body)
            if end is not None:
                return decode_request(body, end, max_objects_bytes)
        head, binary = body, memoryview(b"")
    try:
        doc = jsonload.loads(head, max_objects_bytes)
    except orjson.JSONDecodeError as exc:
        end = _json_prefix_end(body) if header_length is None else None
        if end is not None:
            # Binary data after the JSON but no Inference-Header-Content-Length (plain HTTP tools
            # such as curl or wrk): the JSON header ends where its top-level object closes.
            return decode_request(body, end, max_objects_bytes)
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("request body must have a non-empty 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(raw_inputs):
        where = f"inputs[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where}: must be an object with name, shape, datatype and data")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"{where}: missing 'name'")
        where = f"inputs[{i}] ({name[:64]!r})"
        datatype = item.get("datatype")
        if datatype not in DTYPES:
            raise BadRequest(f"{where}: unknown datatype {datatype!r}; one of {', '.join(DTYPES)}")
        shape = check_shape(item.get("shape"), where)
        params = item.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise BadRequest(f"{where}: binary_data_size {size!r} runs past the {len(binary)} bytes of binary data")
            inputs[name] = raw_to_array(binary[offset : offset + size], datatype, shape, where)
            offset += size
        elif "data" in item:
            inputs[name] = _json_to_array(item["data"], datatype, shape, where)
        else:
            raise BadRequest(f"{where}: has neither 'data' nor parameters.binary_data_size")
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data were not claimed by any input")
    req = InferRequest(inputs=inputs, id=doc.get("id") if isinstance(doc.get("id"), str) else None)
    top = doc.get("parameters")
    if isinstance(top, dict) and top.get("binary_data_output"):
        req.binary_default = True
    outs = doc.get("outputs")
    if outs is not None:
        if not isinstance(outs, list):
            raise BadRequest("'outputs' must be a list of {name, parameters} objects")
        req.outputs = []
        for j, o in enumerate(outs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise BadRequest(f"outputs[{j}]: must be an object with a 'name'")
            req.outputs.append(o["name"])
            p = o.get("parameters")
            if isinstance(p, dict) and "binary_data" in p:
                req.binary_outputs[o["name"]] = bool(p["binary_data"])
    return req


def _json_data(arr: np.ndarray) -> Any:
    flat = arr.reshape(-1)
    if flat.dtype.kind in "OSU":
        return [x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in flat]
    if flat.dtype == np.float16:
        return flat.astype(np.float32)
    return np.ascontiguousarray(flat)


def encode_response(resp: InferResponse, req: InferRequest) -> tuple[bytes, int | None]:
    """Serialize a V2 response; returns (body, JSON header length when binary outputs follow, else None)."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, arr in resp.outputs.items():
        out: dict[str, Any] = {"name": name, "datatype": v2_datatype(arr), "shape": list(arr.shape)}
        if req.binary_outputs.get(name, req.binary_default):
            raw = array_to_raw(arr)
            out["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            out["data"] = _json_data(arr)
        outputs.append(out)
    doc: dict[str, Any] = {"model_name": resp.model_name, "model_version": resp.model_version, "outputs": outputs}
    if resp.id is not None:
        doc["id"] = resp.id
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)
