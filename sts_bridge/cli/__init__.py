"""The ``sts-bridge`` command line, one module per command group. Imports: any package.

``main(argv)`` returns an :class:`ExitStatus`; ``run()`` is the console
script. Commands live in small modules (``auth_commands``, ``transfer_commands``
...), each exposing ``register(subparsers)``; heavy imports (boto3, the
generated client) happen inside the command functions so that ``--help`` and
a warm ``presign`` start fast. ``sts-bridge run FILE`` runs many data
commands in this one process (:mod:`sts_bridge.cli.run_command`).
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
    """Console-script entry point (and ``python -m sts_bridge``).

    Before the process exits, every object the command made (modules,
    classes, functions: nearly all of them live until the end) is moved out
    of the cyclic garbage collector's reach with ``gc.freeze()``: the
    interpreter's last collections walk them all, about 13 ms of a warm
    tiny command's 120 ms of CPU. What exit does otherwise stays: atexit
    handlers, waiting for threads, flushing, and objects freed as their
    last reference goes; only garbage cycles left at exit are not
    collected, and the process's end returns their memory.
    """
    import gc

    from sts_bridge.cli._app import main

    status = int(main())
    gc.freeze()
    sys.exit(status)
