"""karyosearch: embedding search and classification of human chromosome images."""

from .labels import CLASS_NAMES
from .version import __version__

__all__ = ["CLASS_NAMES", "__version__", "load_encoder"]


def load_encoder(path, device="cpu"):
    """Rebuild an encoder from a checkpoint alone (see karyosearch.model.checkpoint)."""
    from .model.checkpoint import load_encoder as _load

    return _load(path, device)
