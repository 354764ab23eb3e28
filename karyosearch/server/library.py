"""Every karyosearch library name the server uses, imported in this one place.

The server adds HTTP around the library and re-implements none of it: search, nearest-proxy
classification, karyotyping, the karyogram and the atomic index writes are the library's.
When the library's modules move, only the imports below change.
"""

from __future__ import annotations

from ..datasets import Dataset, Item
from ..engine import SearchIndex, build_or_update, remove
from ..errors import UserError
from ..image import IMAGE_SUFFIXES, MAX_SIDE, ImageError, is_image_path, load, read_grey
from ..index import IndexNotFoundError
from ..inference import EmbeddedFiles, embed_arrays, embed_files
from ..karyogram import display_image, render_karyogram
from ..karyotype import (
    MAX_CELL_IMAGES,
    hypothesis_named,
    iscn,
    karyotype_cell,
    normal_counts,
    resolve_params,
    true_karyotype,
)
from ..labels import CLASS_NAMES, class_index

__all__ = [
    "CLASS_NAMES",
    "IMAGE_SUFFIXES",
    "MAX_CELL_IMAGES",
    "MAX_SIDE",
    "Dataset",
    "EmbeddedFiles",
    "ImageError",
    "IndexNotFoundError",
    "Item",
    "SearchIndex",
    "UserError",
    "build_or_update",
    "class_index",
    "display_image",
    "embed_arrays",
    "embed_files",
    "hypothesis_named",
    "is_image_path",
    "iscn",
    "karyotype_cell",
    "load",
    "normal_counts",
    "read_grey",
    "remove",
    "render_karyogram",
    "resolve_params",
    "true_karyotype",
]
