"""Ground-truth rulings on the data here (../shared/DESIGN.md): labels the images contradict.

Three gband612 cells carry labels their own images contradict (two shifted by one class, one
"13" that is a speck; the size audit, `survey.audit_labels`, flags the same three). The ruling:
they count as the images show, and every figure on gband612 is given with and without them,
the audited one (without) as the headline. `bench` and the robustness benchmark leave them
out through `audited`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

CONTRADICTED_CELLS: tuple[str, ...] = ("97002302.18", "97002569.11", "98000042.21")


def in_cells(cell_id: str | None, cells: Iterable[str]) -> bool:
    """Whether a crop's cell id names one of `cells` (gband612's ids end in ".tiff")."""
    return bool(cell_id) and any(cell_id == c or cell_id.startswith(c + ".") for c in cells)


def audited(
    cell_ids: Sequence[str | None], cells: Iterable[str] = CONTRADICTED_CELLS
) -> np.ndarray:
    """(N,) bool: True for the crops an audited figure keeps (those in none of `cells`)."""
    cells = tuple(cells)
    return np.asarray([not in_cells(c, cells) for c in cell_ids], dtype=bool).reshape(-1)
