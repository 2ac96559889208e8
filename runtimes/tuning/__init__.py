"""Per-hardware tuning: HardwareProfile, execution-provider choice, session options, int8 quantization."""

from runtimes.tuning.hardware import HardwareProfile
from runtimes.tuning.providers import PREFERENCE, available_providers, choose_providers
from runtimes.tuning.quantize import quantize_int8
from runtimes.tuning.session import Concurrency, SessionChoice, create_session

__all__ = [
    "PREFERENCE",
    "Concurrency",
    "HardwareProfile",
    "SessionChoice",
    "available_providers",
    "choose_providers",
    "create_session",
    "quantize_int8",
]
