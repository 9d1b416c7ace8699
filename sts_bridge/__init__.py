"""sts-bridge: put data into a TerrAPI storage workspace and share it."""

__version__ = "0.1.0"
