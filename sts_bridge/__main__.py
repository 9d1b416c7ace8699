"""``python -m sts_bridge`` runs the CLI."""

from sts_bridge.cli import run

run()
