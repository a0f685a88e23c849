"""Which inference backend embeds: torch on GPUs, ONNX Runtime on CPUs (int8 where the CPU has VNNI).

Measured on a 2-core AVX-512 VNNI CPU (docs/capacity.md): ONNX int8 ≈ 3× torch's throughput at a mean
cosine of 0.993 against torch; fp32 ONNX ≈ 1.2× with identical vectors. Without VNNI, u8×s8 dot
products can saturate and lose accuracy, so ``auto`` stays at fp32 there. Where a model's int8 export
agrees with its fp32 graph less than ``embedding.int8_min_cosine`` (core.embedding.onnx_export), the
embedder serves fp32 ONNX instead.
"""

from __future__ import annotations

import functools
import importlib.util
import platform
from pathlib import Path
from typing import Literal, get_args

Backend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)


@functools.cache
def cpu_has_int8_dot() -> bool:
    """True when the CPU has VNNI int8 dot products (x86 ``avx512_vnni`` or ``avx_vnni``; Linux only)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_vnni", "avx_vnni"})
    return False


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_backend(setting: str, device: str) -> Backend:
    """The backend a setting means on ``device``: ``auto`` picks the fastest one available there."""
    if setting != "auto":
        if setting not in BACKENDS:
            raise ValueError(f"unknown embedding backend {setting!r}")
        return setting
    if device != "cpu" or not onnxruntime_installed():
        return "torch"
    return "onnx-int8" if cpu_has_int8_dot() else "onnx"
