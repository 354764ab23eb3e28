"""Data in: image files, the one image pipeline, dataset readers, splits and dataset surveys."""
