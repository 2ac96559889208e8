"""Build hook: generate Python protobuf/gRPC code from protos/**/*.proto.

Runs on every wheel and editable build, so installing the project is the only
step needed; the generated files are not committed (see .gitignore) and are
always reproducible from the .proto sources with the pinned grpcio-tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def generate(root: Path) -> list[Path]:
    """Compile every .proto under root/protos; return the generated paths."""
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    outputs: list[Path] = []
    for proto in sorted((root / "protos").rglob("*.proto")):
        rel = proto.relative_to(root).as_posix()
        stem = proto.with_suffix("")
        if rel.startswith("protos/inference/"):
            # The V2 inference protocol gets only a descriptor set: the runtime loads
            # it into a private descriptor pool, so it can share a process with
            # clients (tritonclient) that register the same `inference.*` names in
            # protobuf's default pool.
            out = [stem.parent / (stem.name + ".binpb")]
            flags = [f"--descriptor_set_out={out[0]}", "--include_imports"]
        else:
            out = [stem.parent / (stem.name + s) for s in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")]
            flags = [f"--python_out={root}", f"--pyi_out={root}", f"--grpc_python_out={root}"]
        args = ["grpc_tools.protoc", f"-I{root}", f"-I{include}", *flags, rel]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed for {rel}")
        outputs += out
    return outputs


class CustomBuildHook(BuildHookInterface):
    """Hatch hook that runs `generate` before files are collected."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        for path in generate(root):
            build_data["artifacts"].append(path.relative_to(root).as_posix())
