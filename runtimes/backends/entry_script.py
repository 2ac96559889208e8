"""Entry-script backend: a user's score.py with init() and run(), called the way Azure ML calls it.

- plain scripts get the request body as a str: `run(raw_data)`;
- scripts decorated with inference-schema's @input_schema get the JSON body's fields as keyword
  arguments (`run(**body)`), after the body is checked against the schema;
- @rawhttp scripts get an AMLRequest and may return an AMLResponse (status, headers, body).
"""

from __future__ import annotations

import importlib.util
import logging
import reprlib
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import orjson

from runtimes import jsonload
from runtimes.backends.base import V1Request, V1Response
from runtimes.errors import BadRequest, InitFailed, RunFailed

log = logging.getLogger("runtimes.entry_script")
COMPAT_DIR = Path(__file__).resolve().parent.parent / "compat"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):  # pandas DataFrame/Series
        return obj.to_dict(orient="records") if hasattr(obj, "columns") else obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"run() returned a {type(obj).__name__}, which is not JSON-serializable")


def to_json(value: Any) -> bytes:
    """JSON bytes of whatever run() returned (numpy arrays and scalars included)."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "number": (int, float),
    "integer": (int, float),  # lenient like NumpyParameterType's cast: 1.0 for an int64 column is accepted
    "string": (str,),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def check_schema(value: Any, schema: dict[str, Any], where: str) -> None:
    """Check `value` against an OpenAPI/swagger schema fragment from inference-schema; BadRequest on mismatch."""
    kind = schema.get("type")
    if kind is None:
        return
    allowed = _JSON_TYPES.get(kind)
    if allowed is None:
        return
    if value is None and schema.get("nullable"):
        return
    if not isinstance(value, allowed) or (kind in ("number", "integer") and isinstance(value, bool)):
        # reprlib: bounded in depth and length (str() of a deeply nested value recurses without limit)
        raise BadRequest(f"{where}: expected {kind}, got {type(value).__name__} ({reprlib.repr(value)[:40]})")
    # The isinstance checks below repeat what `allowed` just checked, for the type checker.
    if kind == "array" and isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            check_schema(item, schema["items"], f"{where}[{i}]")
    elif kind == "object" and isinstance(value, dict):
        props = schema.get("properties") or {}
        for req in schema.get("required") or ():
            if req not in value:
                raise BadRequest(f"{where}: missing field '{req}'")
        for k, sub in props.items():
            if k in value and isinstance(sub, dict):
                check_schema(value[k], sub, f"{where}.{k}")


class EntryScriptBackend:
    """Loads score.py from its source folder, runs init() once, then run() per request."""

    platform = "entry_script"

    def __init__(self, script: Path, source_dir: Path, max_objects_bytes: int = 64 << 20) -> None:
        """Import the script and run init(); InitFailed carries the script's own error message.

        `max_objects_bytes`: what a JSON body parsed for an inference-schema run() may cost.
        """
        self.max_objects_bytes = max_objects_bytes
        path = (source_dir / script) if not script.is_absolute() else script
        if not path.is_file():
            raise InitFailed(f"entry script not found: {path}")
        self.script = path
        for p in (str(COMPAT_DIR), str(source_dir.resolve())):
            if p not in sys.path:
                sys.path.insert(0, p)
        try:
            spec = importlib.util.spec_from_file_location(path.stem, path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        except Exception as exc:
            traceback.print_exc()
            raise InitFailed(f"cannot import entry script {path}: {type(exc).__name__}: {exc}") from None
        for fn in ("init", "run"):
            if not callable(getattr(module, fn, None)):
                raise InitFailed(f"entry script {path} has no {fn}() function")
        self.module = module
        self.run_fn = module.run
        self.rawhttp = bool(getattr(self.run_fn, "__aml_rawhttp__", False))
        self.input_schema, self.output_schema = self._schemas()
        started = time.perf_counter()
        try:
            module.init()
        except Exception as exc:
            traceback.print_exc()
            raise InitFailed(f"init() failed in {path.name}: {type(exc).__name__}: {exc}") from None
        log.info(
            "entry script %s: init() took %.0f ms (%s)", path.name, (time.perf_counter() - started) * 1e3, self.style
        )

    @property
    def style(self) -> str:
        """rawhttp, inference-schema or plain."""
        return "rawhttp" if self.rawhttp else "inference-schema" if self.input_schema else "plain"

    def _schemas(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        try:
            from inference_schema.schema_util import get_input_schema, get_output_schema, is_schema_decorated
        except ImportError:  # inference-schema not installed: plain scripts still work
            return None, None
        if not is_schema_decorated(self.run_fn):
            return None, None
        return get_input_schema(self.run_fn) or None, get_output_schema(self.run_fn) or None

    def score(self, req: V1Request) -> V1Response:
        """Call run() for one /score request (in the runtime's worker thread)."""
        if self.rawhttp:
            from azureml.contrib.services.aml_request import AMLRequest  # from COMPAT_DIR

            arg: Any = AMLRequest(req.method, req.path, req.query, req.headers, bytes(req.body))
            return self._call(lambda: self.run_fn(arg))
        try:
            # Bounded: inference-schema scripts get plain lists, so no numpy fast path here.
            payload = jsonload.loads(req.body, self.max_objects_bytes, numeric_arrays=False)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
        if self.input_schema:
            if not isinstance(payload, dict):
                raise BadRequest(f"request body must be a JSON object with {sorted(self.input_schema['properties'])}")
            check_schema(payload, self.input_schema, "body")
            unknown = set(payload) - set(self.input_schema.get("properties", {}))
            if unknown:
                raise BadRequest(
                    f"unknown field(s) {sorted(unknown)}; run() takes {sorted(self.input_schema['properties'])}"
                )
            return self._call(lambda: self.run_fn(**payload))
        text = req.body.decode()
        return self._call(lambda: self.run_fn(text))

    def _call(self, call: Any) -> V1Response:
        started = time.perf_counter()
        try:
            result = call()
        except Exception as exc:
            log.error("run() raised:\n%s", traceback.format_exc())
            raise RunFailed(f"run() failed: {type(exc).__name__}: {exc}") from None
        run_ms = (time.perf_counter() - started) * 1e3
        if hasattr(result, "status_code") and hasattr(result, "headers") and hasattr(result, "data"):
            headers = [(str(k), str(v)) for k, v in dict(result.headers).items() if k.lower() != "content-type"]
            ctype = next(
                (v for k, v in dict(result.headers).items() if k.lower() == "content-type"), "text/plain; charset=utf-8"
            )
            return V1Response(result.status_code, result.data, ctype, headers, run_ms)
        try:
            body = to_json(result)
        except TypeError as exc:
            raise RunFailed(str(exc)) from None
        return V1Response(200, body, "application/json", [], run_ms)
