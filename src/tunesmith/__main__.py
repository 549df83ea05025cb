"""`python -m tunesmith` is the `tunesmith` command."""

from tunesmith.cli import main

main()
