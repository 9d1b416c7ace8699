"""The package version, importable without the package's public names (the CLI's ``--version``)."""

VERSION = "0.1.0"
