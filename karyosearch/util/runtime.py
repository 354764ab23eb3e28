"""The runtime: which device to compute on, bf16 autocast where it pays, timestamps, and what a
figure was measured on (the CPU, its vector units, the libraries; for benchmark JSON).

torch and faiss are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%z"  # as written in cards, checkpoints and results


def timestamp() -> str:
    """The local time now, e.g. 2025-01-31T14:05:09+0100 (cards, checkpoints, results)."""
    return time.strftime(TIMESTAMP_FORMAT)


def pick_device(name: str) -> torch.device:
    """The torch device for `--device`: auto (CUDA when there is one, else CPU), cpu or cuda."""
    import torch

    from ..errors import UserError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), so autocast pays off.

    `KARYOSEARCH_CPU_BF16=0` or `=1` overrides the check (to compare, or to pin numerics)."""
    import torch

    forced = os.environ.get("KARYOSEARCH_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast where it is faster: on CUDA, and on CPUs with native bf16.

    Measured with benchmarks/bench_train.py (ResNeXt-50 CBAM, 64 px, batch 64, 2 cores):
    - AMD EPYC with AVX-512 BF16: training 60 img/s in fp32 channels_last, 89 img/s under
      bf16 autocast; inference 207 against 374 img/s;
    - AMD EPYC with AVX2 only: training 40 img/s in fp32 channels_last, 2.4 img/s under bf16
      (emulated), so there the fast path is fp32 + channels_last.
    """
    import torch

    dtype = autocast_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype `autocast` uses on `device` (None: plain float32)."""
    import torch

    if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()):
        return torch.bfloat16
    return None


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA, else the CPU's (`cpu_name`)."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def cpu_name() -> str:
    """The CPU model and core count, e.g. 'AMD EPYC 7B13 x2', where the system says."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()} x{os.cpu_count() or 1}"


def versions() -> dict[str, str]:
    """karyosearch and the libraries a figure depends on, as results record them."""
    import faiss
    import numpy as np
    import torch

    from ..version import __version__

    return {
        "karyosearch": __version__,
        "torch": torch.__version__,
        "faiss": getattr(faiss, "__version__", "?"),
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


def describe() -> dict[str, Any]:
    """The machine and the numeric libraries, as benchmark records keep them."""
    import torch

    return {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_fast_bf16(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        **{k: v for k, v in versions().items() if k != "python"},
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
