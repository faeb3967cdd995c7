"""Run the CLI with `python -m twophase`."""

from twophase.cli.app import main

main()
