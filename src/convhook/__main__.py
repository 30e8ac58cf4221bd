"""``python -m convhook`` runs the command line."""

from convhook.cli import main

main()
