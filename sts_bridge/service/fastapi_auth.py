"""A FastAPI dependency that checks the caller: ``Depends(caller_dependency(verifier))``.

>>> verifier = CallerVerifier(issuer, "urn:example:results")       # doctest: +SKIP
>>> @app.post("/results")                                          # doctest: +SKIP
... def store(caller: Caller = Depends(caller_dependency(verifier))): ...

A refusal is an ``HTTPException`` with the status (401 or 403), a one-line
``detail`` and the RFC 6750 ``WWW-Authenticate`` header; the token is never
in it. The dependency is a plain ``def``: FastAPI runs it in its thread pool,
so a JWKS fetch never blocks the event loop.

The caller's token can also be refused later, by the identity provider at
token exchange (:class:`~sts_bridge.service.users.ServiceUsers` raises
:class:`~sts_bridge.errors.CallerRefusedError` then): register
:func:`caller_refused_handler` so that such a request is answered 401 with
the same header, not as a server error::

    app.add_exception_handler(CallerRefusedError, caller_refused_handler)

This module imports FastAPI; nothing else in sts_bridge does.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency's
# parameter annotation (``Request``) at runtime.

import logging
from collections.abc import Callable

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from sts_bridge.errors import CallerRefusedError
from sts_bridge.service.verify import Caller, CallerRequirements, CallerVerifier

__all__ = ["caller_dependency", "caller_refused_handler", "refusal_exception"]

logger = logging.getLogger("sts_bridge.service")


def refusal_exception(exc: CallerRefusedError) -> HTTPException:
    """The ``HTTPException`` answering a refused caller."""
    return HTTPException(
        status_code=exc.status,
        detail=exc.message,
        headers={"WWW-Authenticate": exc.www_authenticate()},
    )


async def caller_refused_handler(request: Request, exc: Exception) -> JSONResponse:
    """An exception handler answering a :class:`CallerRefusedError` raised in a route
    (the exchange refused the caller's token): its status, one line, the header."""
    assert isinstance(exc, CallerRefusedError)
    logger.info("refused a caller: %s", exc.message)
    return JSONResponse(
        {"detail": exc.message},
        status_code=exc.status,
        headers={"WWW-Authenticate": exc.www_authenticate()},
    )


def caller_dependency(
    verifier: CallerVerifier, requirements: CallerRequirements | None = None
) -> Callable[[Request], Caller]:
    """A dependency returning the verified :class:`Caller` of the request (else 401/403)."""

    def verified_caller(request: Request) -> Caller:
        try:
            return verifier.verify_header(request.headers.get("authorization"), requirements)
        except CallerRefusedError as exc:
            logger.info("refused a caller: %s", exc.message)
            raise refusal_exception(exc) from None

    return verified_caller
