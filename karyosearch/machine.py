"""What a figure was measured on: the CPU, its vector units, the libraries (for benchmark JSON)."""

from __future__ import annotations

import os
import platform
from typing import Any


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


def describe() -> dict[str, Any]:
    """The machine and the numeric libraries, as benchmark records keep them."""
    import numpy as np
    import torch

    from .inference import cpu_has_fast_bf16

    return {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_fast_bf16(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
