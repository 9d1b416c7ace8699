"""A Flask decorator that checks the caller: ``@requires_caller(verifier)``.

>>> @app.get("/results")                        # doctest: +SKIP
... @requires_caller(verifier)
... def results():
...     caller = flask.g.caller                  # the verified Caller

A refusal answers the status (401 or 403), the RFC 6750
``WWW-Authenticate`` header and a JSON body ``{"error", "error_description"}``
of one line; never the token. A :class:`CallerRefusedError` the view
raises (the identity provider refused to exchange the caller's token) is
answered the same way. This module imports Flask; nothing else in
sts_bridge does.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, jsonify, request

from sts_bridge.errors import CallerRefusedError
from sts_bridge.service.verify import CallerRequirements, CallerVerifier

__all__ = ["requires_caller"]

logger = logging.getLogger("sts_bridge.service")

F = TypeVar("F", bound=Callable[..., Any])


def requires_caller(
    verifier: CallerVerifier, requirements: CallerRequirements | None = None
) -> Callable[[F], F]:
    """Verify the request's bearer token before the view runs; the caller is ``flask.g.caller``."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            try:
                g.caller = verifier.verify_header(
                    request.headers.get("Authorization"), requirements
                )
                # The view's token exchange may refuse the caller too (401).
                return view(*args, **kwargs)
            except CallerRefusedError as exc:
                logger.info("refused a caller: %s", exc.message)
                response = jsonify(
                    error=exc.error or "invalid_request", error_description=exc.message
                )
                response.status_code = exc.status
                response.headers["WWW-Authenticate"] = exc.www_authenticate()
                return response

        return checked  # type: ignore[return-value]

    return decorate
