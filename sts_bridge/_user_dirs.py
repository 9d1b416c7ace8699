"""Where sts-bridge keeps its per-user files, answered without the configuration.

The configuration (:mod:`sts_bridge.config`) needs the cache and config
directories; they are answered here with ``str`` paths and without
importing platformdirs on Linux (see :func:`user_dir`).
"""

from __future__ import annotations

import os
import sys

__all__ = ["APP_NAME", "cache_dir", "user_dir"]

APP_NAME = "sts-bridge"
#: The XDG base directories platformdirs uses on Linux: (variable, fallback).
_XDG = {"cache": ("XDG_CACHE_HOME", "~/.cache"), "config": ("XDG_CONFIG_HOME", "~/.config")}


def user_dir(kind: str) -> str:
    """The per-user ``kind`` ("cache" or "config") directory of sts-bridge.

    platformdirs' answer; on Linux its XDG rule is applied here, because
    importing platformdirs costs every command about 10 ms of its start-up.
    """
    if sys.platform.startswith("linux"):
        variable, fallback = _XDG[kind]
        base = os.environ.get(variable, "")
        return os.path.join(base if base.strip() else os.path.expanduser(fallback), APP_NAME)
    import platformdirs

    finder = platformdirs.user_cache_dir if kind == "cache" else platformdirs.user_config_dir
    return str(finder(APP_NAME))


def cache_dir() -> str:
    """``STS_BRIDGE_CACHE_DIR`` or the per-user cache directory."""
    env = os.environ.get("STS_BRIDGE_CACHE_DIR")
    return os.path.expanduser(env) if env else user_dir("cache")
