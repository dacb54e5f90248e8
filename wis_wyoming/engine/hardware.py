"""Hardware plan: which device and compute type Whisper runs with."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import ctranslate2

from ..errors import ConfigError

_LOGGER = logging.getLogger(__name__)

# Fastest first. int8 roughly halves CPU latency against float32 at the same WER for Whisper;
# on GPUs float16 is the native fast path and int8_float16 saves memory at a small cost.
_CPU_PREFERENCE = ("int8", "int8_float32", "float32")
_CUDA_PREFERENCE = ("float16", "int8_float16", "bfloat16", "int8", "float32")


@dataclass(frozen=True)
class ComputePlan:
    device: str  # "cpu" or "cuda"
    device_index: int
    compute_type: str
    cpu_threads: int
    cuda_devices: int

    def describe(self) -> str:
        where = f"cuda:{self.device_index}" if self.device == "cuda" else f"cpu ({self.cpu_threads} threads)"
        return f"{where}, compute type {self.compute_type}, {self.cuda_devices} CUDA device(s) seen"


def plan_compute(device: str = "auto", compute_type: str = "auto", cpu_threads: int = 0) -> ComputePlan:
    """Choose device and compute type; `auto` picks CUDA when CTranslate2 sees a GPU."""
    cuda_devices = ctranslate2.get_cuda_device_count()
    index = 0
    if device.startswith("cuda:"):
        device, index = "cuda", int(device[5:])
    if device == "auto":
        device = "cuda" if cuda_devices else "cpu"
    if device == "cuda" and index >= cuda_devices:
        raise ConfigError(
            f"device cuda:{index} requested but CTranslate2 sees {cuda_devices} CUDA device(s); "
            "use --device cpu or install a CUDA-enabled CTranslate2"
        )
    supported = ctranslate2.get_supported_compute_types(device, index)
    if compute_type == "auto":
        preference = _CUDA_PREFERENCE if device == "cuda" else _CPU_PREFERENCE
        compute_type = next(t for t in preference if t in supported)
    elif compute_type != "default" and compute_type not in supported:
        raise ConfigError(
            f"compute type {compute_type} is not supported on {device}; "
            f"supported: {', '.join(sorted(supported))}"
        )
    threads = cpu_threads or os.cpu_count() or 1
    return ComputePlan(device, index, compute_type, threads, cuda_devices)
