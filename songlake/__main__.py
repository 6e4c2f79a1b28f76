"""``python -m songlake``: the command line."""

from songlake.cli import main

main()
