"""The ``sts-bridge`` command line, one module per command group. Imports: any package.

``main(argv)`` returns an :class:`ExitStatus`; ``run()`` is the console
script. Commands live in small modules (``auth_commands``, ``transfer_commands``
...), each exposing ``register(subparsers)``; heavy imports (boto3, the
generated client) happen inside the command functions so that ``--help`` and
a warm ``presign`` start fast. With ``STS_BRIDGE_RESIDENT`` set, ``run()``
hands data commands to the resident helper (:mod:`sts_bridge.cli.resident`)
before importing any of that.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from sts_bridge._lazy import lazy_exports

if TYPE_CHECKING:
    from sts_bridge.cli._app import ExitStatus, main

__all__ = ["ExitStatus", "main", "run"]

__getattr__, __dir__ = lazy_exports(
    __name__, {"ExitStatus": "sts_bridge.cli._app", "main": "sts_bridge.cli._app"}, globals()
)


def run() -> None:
    """Console-script entry point: the resident helper runs the command when it
    is on and up, this process otherwise."""
    from sts_bridge.cli.resident import forward

    status = forward(sys.argv[1:])
    if status is None:
        from sts_bridge.cli._app import main

        status = int(main())
    sys.exit(status)
