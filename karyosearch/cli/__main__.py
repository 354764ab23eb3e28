"""`python -m karyosearch.cli`: the command line, as the `karyosearch` script runs it."""

from .main import main

main()
