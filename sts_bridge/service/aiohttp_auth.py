"""An aiohttp decorator that checks the caller: ``@requires_caller(verifier)``.

>>> @requires_caller(verifier)                 # doctest: +SKIP
... async def results(request):
...     caller = request["caller"]             # the verified Caller

The check runs in the loop's default executor (a JWKS fetch must not block
the event loop). A refusal answers the status (401 or 403), the RFC 6750
``WWW-Authenticate`` header and a JSON body ``{"error", "error_description"}``
of one line; never the token. A :class:`CallerRefusedError` the handler
raises (the identity provider refused to exchange the caller's token) is
answered the same way. This module imports aiohttp; nothing else in
sts_bridge.service does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from sts_bridge.errors import CallerRefusedError
from sts_bridge.service.verify import CallerRequirements, CallerVerifier

__all__ = ["requires_caller"]

logger = logging.getLogger("sts_bridge.service")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requires_caller(
    verifier: CallerVerifier, requirements: CallerRequirements | None = None
) -> Callable[[Handler], Handler]:
    """Verify the request's bearer token before the handler runs; the caller is
    ``request["caller"]``."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            header = request.headers.get("Authorization")
            loop = asyncio.get_running_loop()
            try:
                request["caller"] = await loop.run_in_executor(
                    None, verifier.verify_header, header, requirements
                )
                # The handler's token exchange may refuse the caller too (401).
                return await handler(request)
            except CallerRefusedError as exc:
                logger.info("refused a caller: %s", exc.message)
                return web.json_response(
                    {"error": exc.error or "invalid_request", "error_description": exc.message},
                    status=exc.status,
                    headers={"WWW-Authenticate": exc.www_authenticate()},
                )

        return checked

    return decorate
