"""`python -m sigserve.cli`: the `sigserve` command without its console script."""

from sigserve.cli import main

main()
