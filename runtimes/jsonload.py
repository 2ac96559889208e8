"""JSON request bodies parsed at a bounded memory cost.

orjson turns every number of a JSON tensor into a Python object (a float costs 24 bytes plus an
8-byte slot in its list, a nested row list 56 or more), so a 90 MB body of short numbers grew the
process by 1.5 GB. Here:

- a large body's long numeric arrays (runs of digits, signs, dots, exponents, commas, brackets
  and spaces outside any string) are parsed straight into numpy arrays by `np.fromstring`, after
  checking their bracket skeleton is a regular nested array; the rest of the document goes to
  orjson with each array replaced by a placeholder and then put back as an ndarray;
- whatever still has to become Python objects is first priced from its bracket and comma counts;
  over `max_objects_bytes` the request gets 413 (PayloadTooLarge) instead of the memory.

Callers get `orjson.JSONDecodeError` for malformed JSON, as from `orjson.loads`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from runtimes.errors import PayloadTooLarge

# Bodies smaller than this are parsed by orjson directly (their objects cost at most ~32 MiB).
FAST_MIN_BODY = 1 << 20
# Numeric runs shorter than this stay in the document orjson parses.
FAST_MIN_RUN = 1 << 16
# What one JSON value costs as Python objects, at most: a list or dict header with its slack,
# a float or int with its slot in the container.
CONTAINER_COST = 88
SCALAR_COST = 32

_NUMERIC = b"0123456789+-.eE \t\r\n,[]"
_NOT_STRUCTURE = b"0123456789+-.eE \t\r\n"
_RUN_MAP = bytes(ord("n") if c in _NUMERIC else ord("_") for c in range(256))  # numeric char -> n, else _
_FLOAT64 = np.dtype(np.float64)
CHUNK_BYTES = 1 << 20  # numbers are parsed a slice of this size at a time (~10 MB of objects)
_PLACEHOLDER = "\x00ndarray:"


def objects_cost(text: bytes | bytearray) -> int:
    """An upper estimate of the bytes `orjson.loads(text)` allocates as Python objects."""
    containers = text.count(b"[") + text.count(b"{")
    scalars = text.count(b",") + text.count(b":") + 1
    return containers * CONTAINER_COST + scalars * SCALAR_COST + len(text)


def loads(
    body: bytes | bytearray,
    max_objects_bytes: int,
    numeric_arrays: bool = True,
    float_dtype: np.dtype[Any] = _FLOAT64,
) -> Any:
    """Parse `body`; large numeric arrays come back as numpy arrays when `numeric_arrays`.

    `float_dtype`: what arrays of non-integers become (float32 when the caller knows the tensor
    is FP32: half the memory of float64, and the same values once cast).

    Raises orjson.JSONDecodeError for malformed JSON and PayloadTooLarge when the part that must
    become Python objects would cost more than `max_objects_bytes`.
    """
    if len(body) < FAST_MIN_BODY:
        return orjson.loads(body)
    hollowed = _hollow(body, float_dtype) if numeric_arrays else None
    text = body if hollowed is None else hollowed[0]
    cost = objects_cost(text)
    if cost > max_objects_bytes:
        raise PayloadTooLarge(
            f"this {len(body)}-byte JSON body would take about {cost >> 20} MiB to parse (limit "
            f"{max_objects_bytes >> 20} MiB: twice --max-body-bytes, at least 64 MiB); send large tensors as regular "
            "numeric arrays or in the binary tensor extension"
        )
    doc = orjson.loads(text)
    if hollowed is None:
        return doc
    return _put_back(doc, hollowed[1])


def _hollow(body: bytes | bytearray, float_dtype: np.dtype[Any]) -> tuple[bytes, list[np.ndarray]] | None:
    """`body` with each long regular numeric array replaced by a placeholder string, and the arrays."""
    if b"\\" in body:  # no escapes: then quote parity tells exactly whether a byte is inside a string
        return None
    spans = _numeric_runs(body)
    if not spans:
        return None
    parts: list[bytes | bytearray] = []
    arrays: list[np.ndarray] = []
    copied = 0  # body[:copied] is already in parts
    counted, quotes = 0, 0
    for start, end in spans:
        first = body.find(b"[", start, end)
        if first == -1:
            continue
        quotes += body.count(b'"', counted, first)
        counted = first
        if quotes % 2:  # inside a string
            continue
        tail = bytes(body[max(first, end - 64) : end])  # strip the separators after the array
        end -= len(tail) - len(tail.rstrip(b", \t\r\n"))
        arr = parse_regular_array(body, first, end, float_dtype)
        if arr is None:
            continue
        parts.append(body[copied:first])
        parts.append(b'"\\u0000ndarray:%d"' % len(arrays))
        arrays.append(arr)
        copied = end
    if not arrays:
        return None
    parts.append(body[copied:])
    return b"".join(parts), arrays


def _numeric_runs(body: bytes | bytearray) -> list[tuple[int, int]]:
    """(start, end) of every run of numeric-array characters at least FAST_MIN_RUN long.

    Found a CHUNK_BYTES slice at a time (a map of the whole body would be one more copy of it);
    `find` of FAST_MIN_RUN 'n's keeps the Python loop to the long runs, however many short ones.
    """
    spans: list[tuple[int, int]] = []
    wanted = b"n" * FAST_MIN_RUN
    carry: int | None = None  # start of a run still open at the end of the previous slice
    for base in range(0, len(body), CHUNK_BYTES):
        marks = bytes(body[base : base + CHUNK_BYTES]).translate(_RUN_MAP)
        pos = 0
        if carry is not None:
            lead = len(marks) - len(marks.lstrip(b"n"))
            if lead == len(marks):
                continue  # the whole slice is inside the run
            if base + lead - carry >= FAST_MIN_RUN:
                spans.append((carry, base + lead))
            carry, pos = None, lead
        while (found := marks.find(wanted, pos)) != -1:
            stop = marks.find(b"_", found)
            if stop == -1:
                carry, pos = base + found, len(marks)
                break
            spans.append((base + found, base + stop))
            pos = stop
        else:
            tail = len(marks) - len(marks.rstrip(b"n"))
            if tail and len(marks) - tail >= pos:
                carry = base + len(marks) - tail
    if carry is not None and len(body) - carry >= FAST_MIN_RUN:
        spans.append((carry, len(body)))
    return spans


def parse_regular_array(
    body: bytes | bytearray, start: int, end: int, float_dtype: np.dtype[Any] = _FLOAT64
) -> np.ndarray | None:
    """A numpy array for `body[start:end]` (a JSON array of numbers, nested regularly), else None.

    Read in slices of about CHUNK_BYTES, so no copy of the whole text is made. Numbers with a
    fraction or exponent become `float_dtype`, others int64. None for anything orjson should judge
    instead: ragged or empty lists, malformed numbers, integers beyond int64.
    """
    if body[start : start + 1] != b"[" or body[end - 1 : end] != b"]":
        return None
    leaf_end = body.find(b"]", start, end)
    if not any(c in b"0123456789" for c in body[body.rfind(b"[", start, leaf_end) : leaf_end]):
        return None  # the first innermost list is empty: ragged or empty lists are orjson's to judge
    cuts = _cuts(body, start, end)
    skeleton = b"".join(bytes(body[a:b]).translate(None, _NOT_STRUCTURE) for a, b in cuts)  # only [ ] ,
    dims = _regular_dims(skeleton)
    del skeleton
    if dims is None:
        return None
    is_float = any(body.find(c, start, end) != -1 for c in (b".", b"e", b"E"))
    out = np.empty(math.prod(dims), dtype=float_dtype if is_float else np.int64)
    filled = 0
    for a, b in cuts:
        text = bytes(body[a:b]).translate(None, b"[] \t\r\n").strip(b",")  # commas alone separate the numbers
        if not text:
            continue
        try:
            values = orjson.loads(b"[" + text + b"]")  # a slice's numbers: a bounded batch of objects
            chunk = np.fromiter(values, dtype=out.dtype, count=len(values))
        except (orjson.JSONDecodeError, OverflowError, TypeError, ValueError):
            return None  # a malformed number, an integer beyond int64: orjson names it on the slow path
        if chunk.ndim != 1 or filled + chunk.size > out.size:
            return None
        out[filled : filled + chunk.size] = chunk
        filled += chunk.size
    if filled != out.size:
        return None
    return out.reshape(dims)


def _cuts(body: bytes | bytearray, start: int, end: int) -> list[tuple[int, int]]:
    """Slices of body[start:end] of about CHUNK_BYTES each, cut just after a comma."""
    cuts = []
    pos = start
    while pos < end:
        cut = body.find(b",", min(pos + CHUNK_BYTES, end), end)
        cut = end if cut == -1 else cut + 1
        cuts.append((pos, cut))
        pos = cut
    return cuts


def _regular_dims(skeleton: bytes) -> list[int] | None:
    """The dimensions of the regular nested array whose brackets and commas are `skeleton`, else None."""
    depth = len(skeleton) - len(skeleton.lstrip(b"["))
    if not 0 < depth <= 32:
        return None
    # The first list at each level ends where that many ']' first follow each other; from their
    # lengths come the dimensions of a regular array, whose skeleton must then match exactly.
    sizes = []
    for level in range(1, depth + 1):
        closing = depth - level + 1
        found = skeleton.find(b"]" * closing)
        if found == -1:
            return None
        sizes.append(found + closing - (level - 1))
    dims = [0] * depth
    dims[-1] = sizes[-1] - 1  # '[' + n-1 commas + ']'
    for level in range(depth - 2, -1, -1):
        count, rest = divmod(sizes[level] - 1, sizes[level + 1] + 1)
        if rest or count < 1:
            return None
        dims[level] = count
    if dims[-1] < 1 or skeleton != _expected_skeleton(dims):
        return None
    return dims


def _expected_skeleton(dims: list[int]) -> bytes:
    level = b"[" + b"," * (dims[-1] - 1) + b"]"
    for n in reversed(dims[:-1]):
        level = b"[" + (level + b",") * (n - 1) + level + b"]"  # repetition is a memcpy, join is not
    return level


def _put_back(doc: Any, arrays: list[np.ndarray]) -> Any:
    """Replace placeholder strings in `doc` by their arrays (iteratively: `doc` may nest deeply)."""

    def swap(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(_PLACEHOLDER):
            return arrays[int(value[len(_PLACEHOLDER) :])]
        return value

    doc = swap(doc)
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str):
                    node[key] = swap(value)
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, str):
                    node[i] = swap(value)
                elif isinstance(value, dict | list):
                    stack.append(value)
    return doc
