"""The ``sts-bridge`` command line, one module per command group. Imports: any package.

``main(argv)`` returns an :class:`ExitStatus`; ``run()`` is the console
script. Commands live in small modules (``auth_commands``, ``transfer_commands``
...), each exposing ``register(subparsers)``; heavy imports (boto3, the
generated client) happen inside the command functions so that ``--help`` and
a warm ``presign`` start fast.
"""

from sts_bridge.cli._app import ExitStatus, main, run

__all__ = ["ExitStatus", "main", "run"]
