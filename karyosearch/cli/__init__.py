"""The `karyosearch` command line (`karyosearch.cli:app`, the console script)."""

from .main import app, main

__all__ = ["app", "main"]
