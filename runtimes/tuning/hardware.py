"""What this device offers the runtime: CPU quota, memory, architecture, accelerators present."""

from __future__ import annotations

import math
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path


def _cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (v2 cpu.max, else v1 cfs), or None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def _memory_bytes() -> int:
    """Physical memory, capped by a cgroup v2 memory.max when one is set."""
    total = 0
    try:
        import psutil

        total = int(psutil.virtual_memory().total)
    except Exception:  # psutil missing or unreadable /proc: fall back to sysconf
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            total = min(total, int(limit))
    except (OSError, ValueError):
        pass
    return total


def _accelerators() -> list[str]:
    """Accelerators visible to this process (device nodes and vendor tools, no driver imports)."""
    found: list[str] = []
    if Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi"):
        found.append("nvidia-gpu")
    if Path("/dev/kfd").exists():
        found.append("amd-gpu")
    if list(Path("/dev").glob("accel*")) or Path("/dev/dri/renderD128").exists():
        found.append("intel-npu-or-gpu")
    if list(Path("/dev").glob("xclmgmt*")) or list(Path("/dev").glob("xocl*")):
        found.append("fpga")
    return found


@dataclass(frozen=True)
class HardwareProfile:
    """The device as the runtime sees it; `cpus` already honours the cgroup quota and --cpus."""

    cpus: int
    logical_cpus: int
    memory_bytes: int
    arch: str
    accelerators: list[str] = field(default_factory=list)

    @classmethod
    def detect(cls, cpus_limit: float | None = None) -> HardwareProfile:
        """Probe this machine; `cpus_limit` (the service's --cpus) caps the usable cores."""
        try:
            logical = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            logical = os.cpu_count() or 1
        usable = float(logical)
        quota = _cgroup_cpu_quota()
        if quota:
            usable = min(usable, quota)
        if cpus_limit:
            usable = min(usable, cpus_limit)
        return cls(
            cpus=max(1, math.ceil(usable - 1e-9)) if usable >= 1 else 1,
            logical_cpus=logical,
            memory_bytes=_memory_bytes(),
            arch=platform.machine(),
            accelerators=_accelerators(),
        )

    def describe(self) -> str:
        """One line a person can read."""
        acc = ",".join(self.accelerators) or "none"
        return (
            f"{self.cpus} usable cpu(s) of {self.logical_cpus}, {self.memory_bytes / 2**30:.1f} GiB memory, "
            f"{self.arch}, accelerators: {acc}"
        )
