"""V2 REST codec: JSON tensors and the binary tensor data extension, for every datatype onnxruntime runs.

Binary extension (as tritonclient speaks it): the body is a JSON header of
`Inference-Header-Content-Length` bytes followed by the raw tensors, in input order, each
announced by `parameters.binary_data_size`. Fixed-size types are little-endian row-major; BYTES
elements are each a 4-byte little-endian length then the bytes. Without that header, a body whose
JSON object is followed by more bytes is read the same way, the header ending where the object
closes (so curl or wrk can post binary tensors from a file).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import orjson

from runtimes.errors import BadRequest
from runtimes.v2.types import DTYPES, InferRequest, InferResponse, v2_datatype

_LEN = struct.Struct("<I")


def bytes_from_wire(buf: bytes | memoryview, count: int, where: str) -> np.ndarray:
    """Decode `count` length-prefixed BYTES elements."""
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
    if datatype == "BYTES":
        return bytes_from_wire(raw, count, where).reshape(shape)
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(
            f"{where}: {len(raw)} bytes of data for shape {shape} {datatype}, expected {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)


def array_to_raw(arr: np.ndarray) -> bytes:
    """Raw little-endian bytes of an output array."""
    if arr.dtype.kind in "OSU":
        return bytes_to_wire(arr)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def _json_prefix_end(body: bytes) -> int | None:
    """Byte offset where a leading JSON object ends when more bytes follow it, else None."""
    if not body.startswith(b"{"):
        return None
    decoder = json.JSONDecoder()
    for limit in (4096, 65536, len(body)):  # the header is small: try prefixes before the whole body
        try:
            _, end = decoder.raw_decode(body[:limit].decode("latin-1"))  # latin-1: one char per byte
        except ValueError:
            continue
        return end if end < len(body) else None
    return None


def check_shape(value: Any, where: str) -> list[int]:
    """A V2 shape: a list of non-negative ints."""
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise BadRequest(f"{where}: 'shape' must be a list of non-negative integers, got {value!r:.80}")
    return value


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
    return arr.reshape(shape)


def decode_request(body: bytes, header_length: int | None) -> InferRequest:
    """Parse a V2 REST infer body (JSON, optionally followed by binary tensor data)."""
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
                return decode_request(body, end)
        head, binary = body, memoryview(b"")
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        end = _json_prefix_end(body) if header_length is None else None
        if end is not None:
            # Binary data after the JSON but no Inference-Header-Content-Length (plain HTTP tools
            # such as curl or wrk): the JSON header ends where its top-level object closes.
            return decode_request(body, end)
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
        where = f"inputs[{i}] ('{name}')"
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
