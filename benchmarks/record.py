"""One way for the speed benchmarks to keep their figures: each run appended to the JSON's
`runs` (the latest also under `latest`), with the load average before and after, what else
ran (`note`), the machine and the time: on shared cores one run alone proves little."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from karyosearch.util.atomic import write_json
from karyosearch.util.runtime import describe, timestamp


def shipped_model(stain: str = "Q-band") -> Path:
    """The shipped encoder for `stain` (`karyosearch.model.shipped.SHIPPED`): the speed
    benchmarks' default model. Called by a parent process only: their child processes, which
    time imports and start OpenMP runtimes, are given the path."""
    from karyosearch.model.shipped import SHIPPED, models_dir

    return models_dir() / SHIPPED[stain]


def append_run(path: Path, result: dict[str, Any], note: str, load_before: Any) -> Path:
    """Complete `result` with the load, note, machine and time, and append it to `path`."""
    result["load_average_before_after"] = [load_before, list(os.getloadavg())]
    result["note"] = note
    result["machine"] = describe()
    result["measured_at"] = timestamp()
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved.setdefault("runs", []).append(result)
    saved["latest"] = result
    return write_json(path, saved)
