"""Class names: the 24 human chromosome classes, as users see them.

Internally a class is an index 0..23; everywhere a user sees it, it is the string
"1".."22", "X" or "Y". Datasets number X and Y as 23 and 24; both spellings are accepted.
"""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = tuple([str(i) for i in range(1, 23)] + ["X", "Y"])
NUM_CLASSES = len(CLASS_NAMES)
_ALIASES = {"23": "X", "24": "Y", "x": "X", "y": "Y"}


def class_index(name: str | int) -> int:
    """Index 0..23 of a class given as "1".."22", "X", "Y", "23", "24" or an int 1..24.

    Raises ValueError for anything else (gband612 has a `clase25`, which is no class).
    """
    key = str(name).strip()
    key = _ALIASES.get(key, key)
    try:
        return CLASS_NAMES.index(key)
    except ValueError:
        raise ValueError(
            f"not a chromosome class: {name!r} (expected 1..22, X, Y, 23 or 24)"
        ) from None


def class_name(index: int) -> str:
    """The user-facing name of class index 0..23."""
    return CLASS_NAMES[index]
