"""The reference TerrAPI server of the local platform (connexion 3, spec-first).

``create_app(config)`` returns the ASGI app; ``python -m sts_bridge_devstack.api
--config CONFIG.json --port N`` serves it with uvicorn on 127.0.0.1.
(connexion is imported lazily: ``platform.py`` only needs the policy module.)
"""

from __future__ import annotations

from typing import Any

__all__ = ["API_BASE_PATH", "SPEC_PATH", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
