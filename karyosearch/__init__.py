"""karyosearch: embedding search and classification of human chromosome images."""

from .labels import CLASS_NAMES

__version__ = "0.1.0"
__all__ = ["CLASS_NAMES", "__version__", "load_encoder"]


def load_encoder(path, device="cpu"):
    """Rebuild an encoder from a checkpoint alone (see karyosearch.model.load_encoder)."""
    from .model import load_encoder as _load

    return _load(path, device)
