"""One small exception tree. Every error carries a message a user understands, the HTTP status
(when there was an answer) and CometAPI's request id (when it sent one), so the UI can show
"what happened" and support can trace it, without a traceback ever reaching the screen."""

from __future__ import annotations


class CometError(Exception):
    """Base of everything the client raises."""

    #: Whether a status (GET) call may be tried again after this error.
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id
        self.detail = detail  # raw server text, for the expander under the message
        self.retry_after = retry_after

    def __str__(self) -> str:
        suffix = f" (request id: {self.request_id})" if self.request_id else ""
        return f"{self.message}{suffix}"


class InvalidId(CometError, ValueError):
    """A prediction id that is not safe to put into a URL path; raised before any request."""


class ConnectionFailed(CometError):
    """No answer at all: refused, reset, DNS failure or a read timeout."""

    retryable = True


class CreateUncertain(CometError):
    """A create call got no definite answer (timeout, dropped connection, 5xx, 524).

    It may have been accepted and billed, so it is never resent automatically."""


class AuthError(CometError):
    """401: the key is missing or wrong. `personal`: it was a visitor's own key (Use your own
    key), not the server's COMETAPI_KEY, so the advice goes to the visitor, not the operator."""

    def __init__(self, message: str, *, personal: bool = False, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.personal = personal


class Forbidden(CometError):
    """403: the key may not use this model, or the quota is spent."""


class NotFound(CometError):
    """404: unknown prediction, model or path."""


class InvalidInput(CometError):
    """400/422, or a 500 whose code says the request itself was bad."""


class RateLimited(CometError):
    """429: too many requests; `retry_after` holds the server's hint in seconds."""

    retryable = True


class ServerError(CometError):
    """5xx and gateway failures on CometAPI's side or its provider's."""

    retryable = True


class WrongEndpoint(CometError):
    """A redirect or an HTML page where JSON was expected: the base URL or path is wrong."""


class BadResponse(CometError):
    """The server answered 2xx but not with a prediction we can read."""

    retryable = True


class CannotCancel(CometError):
    """The server has no cancel route (CometAPI documents none)."""
