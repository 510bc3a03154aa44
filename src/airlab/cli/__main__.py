"""`python -m airlab.cli` runs the command line, exactly like the `airlab` script."""

from airlab.cli import main

main()
