"""Every karyosearch library name the server uses, imported in this one place.

The server adds HTTP around the library and re-implements none of it: search, nearest-proxy
classification, karyotyping, the karyogram and the atomic index writes are the library's.
When the library's modules move, only the imports below change.
"""

from __future__ import annotations

from ..cytogenetics import hypothesis_named, iscn, normal_counts, true_karyotype
from ..data.datasets import Dataset, Item
from ..data.image import IMAGE_SUFFIXES, MAX_SIDE, ImageError, is_image_path, load, read_grey
from ..errors import UserError
from ..karyotype.cells import MAX_CELL_IMAGES, karyotype_cell
from ..karyotype.karyogram import display_image, render_karyogram
from ..karyotype.params import resolve_params
from ..labels import CLASS_NAMES, class_index
from ..model.embed import EmbeddedFiles, embed_arrays, embed_files
from ..search.archive import describe as describe_archive
from ..search.engine import SearchIndex
from ..search.folder import IndexNotFoundError
from ..search.update import build_or_update, remove

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
    "describe_archive",
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
