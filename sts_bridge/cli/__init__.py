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


#: Net new container objects between two young collections of the cyclic
#: garbage collector in the CLI (Python's default: 700). A command's imports
#: make tens of thousands of objects that live until it ends: at 700 a warm
#: tiny download runs some 50 collections that find next to nothing, about
#: 6 ms of its CPU. Cycles are still collected, after this many (mypy sets
#: 200,000 for its build); objects freed by reference counting, nearly all
#: of a transfer's, never count toward it.
CLI_GC_THRESHOLD = 100_000


def run() -> None:
    """Console-script entry point (and ``python -m sts_bridge``).

    The cyclic garbage collector runs less often (:data:`CLI_GC_THRESHOLD`),
    and before the process exits every object the command made (modules,
    classes, functions: nearly all of them live until the end) is moved out
    of its reach with ``gc.freeze()``: the interpreter's last collections
    walk them all, about 13 ms of a warm tiny command's 120 ms of CPU. What
    exit does otherwise stays: atexit handlers, waiting for threads,
    flushing, and objects freed as their last reference goes; only garbage
    cycles left at exit are not collected, and the process's end returns
    their memory. ``main()`` called in a program leaves its collector alone.
    """
    import gc

    gc.set_threshold(CLI_GC_THRESHOLD)
    from sts_bridge.cli._app import main

    status = int(main())
    gc.freeze()
    sys.exit(status)
