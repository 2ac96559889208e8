"""Simulated device profiles: the hardware a simulated agent reports and the link it lives on.

A profile is plain data. `Profile.to_json()` writes what the real agent reads with
`agent run --profile FILE` (or `EDGEPORT_PROFILE_JSON`): `name`, `simulated`, `cpu_count`,
`memory_bytes`, `arch`, `os`, `onnx_providers`, `accelerators` (kind, name, memory_bytes,
slots, attributes) and `resources` (the most a runtime may be given). The agent never
imports this module; everything it reads is in that JSON. Every accelerator named here is
simulated (its attributes say so), so nothing can mistake a profile for real hardware.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

GiB = 1024**3


@dataclass(frozen=True)
class SimulatedAccelerator:
    """A declared (simulated) accelerator: a GPU, an FPGA with bitstream slots, or an NPU."""

    kind: str  # gpu | fpga | npu
    name: str
    memory_bytes: int = 0
    slots: int = 0  # FPGA bitstream slots; 0 when not applicable
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RuntimeResources:
    """The most the agent may give one runtime on this device (cores → intra-op threads, memory)."""

    cpu: float
    memory_gb: float


@dataclass(frozen=True)
class LinkFlakiness:
    """How unreliable the device's network is; `simulators.netfault` turns this into a fault schedule."""

    latency_ms: int = 0  # added one-way delay
    jitter_ms: int = 0  # uniform extra delay 0..jitter
    outage_every_s: float = 0.0  # mean time between outages; 0 = never
    outage_s: float = 0.0  # how long each outage lasts
    outage_kind: str = "cut"  # cut (connections closed) | drop (bytes vanish, sockets stay open)

    @property
    def flaky(self) -> bool:
        """True when the profile schedules outages."""
        return self.outage_every_s > 0 and self.outage_s > 0


@dataclass(frozen=True)
class Profile:
    """One kind of simulated device."""

    name: str
    description: str
    cpu_count: int
    memory_bytes: int
    arch: str
    os: str
    onnx_providers: tuple[str, ...]
    resources: RuntimeResources
    transport: str  # the default transport an agent with this profile uses: grpc | mqtt
    link: LinkFlakiness = field(default_factory=LinkFlakiness)
    accelerators: tuple[SimulatedAccelerator, ...] = ()

    def to_dict(self) -> dict:
        """The profile as the JSON object the agent reads (plus transport and link for simulators)."""
        data = asdict(self)
        data["simulated"] = True
        data["onnx_providers"] = list(self.onnx_providers)
        data["accelerators"] = [asdict(a) for a in self.accelerators]
        return data

    def to_json(self) -> str:
        """`to_dict()` as indented JSON text, ready for `agent run --profile FILE`."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def with_gpu(self, name: str = "Simulated NVIDIA T4", memory_gb: int = 16) -> Profile:
        """A copy that also declares one simulated GPU (cloud-vm's optional GPU)."""
        gpu = SimulatedAccelerator("gpu", name, memory_gb * GiB, attributes={"simulated": "true"})
        providers = ("CUDAExecutionProvider", *self.onnx_providers)
        return Profile(
            name=f"{self.name}-gpu",
            description=f"{self.description}, with a simulated GPU",
            cpu_count=self.cpu_count,
            memory_bytes=self.memory_bytes,
            arch=self.arch,
            os=self.os,
            onnx_providers=providers,
            resources=self.resources,
            transport=self.transport,
            link=self.link,
            accelerators=(*self.accelerators, gpu),
        )


CLOUD_VM = Profile(
    name="cloud-vm",
    description="simulated cloud VM: 16 x86_64 cores, 64 GiB, steady datacenter network",
    cpu_count=16,
    memory_bytes=64 * GiB,
    arch="x86_64",
    os="Linux 6.1 (simulated)",
    onnx_providers=("CPUExecutionProvider",),
    resources=RuntimeResources(cpu=8, memory_gb=16),
    transport="grpc",
    link=LinkFlakiness(latency_ms=1),
)

K8S_NODE = Profile(
    name="k8s-node",
    description="simulated Kubernetes worker: 8 x86_64 cores, 32 GiB, runtimes limited like pods",
    cpu_count=8,
    memory_bytes=32 * GiB,
    arch="x86_64",
    os="Linux 6.1 (simulated)",
    onnx_providers=("CPUExecutionProvider",),
    resources=RuntimeResources(cpu=2, memory_gb=4),
    transport="grpc",
    link=LinkFlakiness(latency_ms=2, jitter_ms=2),
)

IOT_EDGE = Profile(
    name="iot-edge",
    description="simulated IoT gateway: 4 ARM cores, 2 GiB, NPU, MQTT over a flaky cellular link",
    cpu_count=4,
    memory_bytes=2 * GiB,
    arch="aarch64",
    os="Linux 5.15 (simulated)",
    onnx_providers=("CPUExecutionProvider",),
    resources=RuntimeResources(cpu=2, memory_gb=1),
    transport="mqtt",
    link=LinkFlakiness(latency_ms=80, jitter_ms=40, outage_every_s=300, outage_s=30),
    accelerators=(
        SimulatedAccelerator("npu", "Simulated Edge NPU (4 TOPS)", 0, attributes={"simulated": "true", "tops": "4"}),
    ),
)

FPGA_BOARD = Profile(
    name="fpga-board",
    description="simulated FPGA accelerator board host: 8 x86_64 cores, 16 GiB, FPGA with 4 bitstream slots",
    cpu_count=8,
    memory_bytes=16 * GiB,
    arch="x86_64",
    os="Linux 5.15 (simulated)",
    onnx_providers=("CPUExecutionProvider",),
    resources=RuntimeResources(cpu=4, memory_gb=8),
    transport="grpc",
    link=LinkFlakiness(latency_ms=5, jitter_ms=5),
    accelerators=(
        SimulatedAccelerator(
            "fpga",
            "Simulated Xilinx Alveo U250",
            64 * GiB,
            slots=4,
            attributes={"simulated": "true", "bitstreams": "resnet50,ssd-mobilenet", "free_slots": "2"},
        ),
    ),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (CLOUD_VM, K8S_NODE, IOT_EDGE, FPGA_BOARD)}


class UnknownProfile(ValueError):
    """A profile name that is not one of PROFILES."""


def get_profile(name: str) -> Profile:
    """The profile called `name` (`cloud-vm-gpu` adds the optional GPU); UnknownProfile names the choices."""
    if name in PROFILES:
        return PROFILES[name]
    if name == "cloud-vm-gpu":
        return CLOUD_VM.with_gpu()
    choices = ", ".join([*PROFILES, "cloud-vm-gpu"])
    raise UnknownProfile(f"unknown device profile {name!r}: choose one of {choices}")
